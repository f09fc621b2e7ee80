/** Periodic sweep: expired leases become lost (then retry or errored); silent cancels are hard-stopped. */
import type { EngineContext } from "./context.ts";
import { retryOrError, setAttemptState, setJobState, LIVE_ATTEMPT } from "./transitions.ts";

export async function sweep(ctx: EngineContext): Promise<{ lost: number; hardStopped: number }> {
  return ctx.store.write((hooks) => {
    const now = ctx.clock.now();
    let lost = 0;
    let hardStopped = 0;
    for (const a of ctx.store.expiredAttempts(now)) {
      const job = ctx.store.getJob(a.jobId);
      if (!job) continue;
      lost++;
      hooks.afterCommit(() => ctx.metrics.leaseExpired());
      setAttemptState(ctx, hooks, a, "lost", `no heartbeat for ${ctx.opts.leaseTtlMs} ms (runner_lost)`, { endedBy: "lost" });
      if (job.attempt !== a.attempt) continue;
      if (job.state === "canceling") {
        setJobState(ctx, hooks, job, "canceled", `attempt ${a.attempt} lost while canceling`);
      } else {
        retryOrError(ctx, hooks, job, { reason: "runner_lost", step: null, message: `attempt ${a.attempt}: lease expired without a heartbeat` });
      }
    }
    for (const job of ctx.store.cancelOverdue(now)) {
      const a = ctx.store.getAttempt(job.id, job.attempt);
      if (a && LIVE_ATTEMPT.has(a.state)) setAttemptState(ctx, hooks, a, "canceled", `hard-stop: no cancel-ack within ${ctx.opts.hardStopMs} ms`, { endedBy: "hard-stop" });
      setJobState(ctx, hooks, job, "canceled", `hard-stopped: no cancel-ack within ${ctx.opts.hardStopMs} ms`);
      hardStopped++;
    }
    return { lost, hardStopped };
  });
}

/** Runs `sweep` every `sweepIntervalMs` until `signal` aborts. */
export async function runSweeper(ctx: EngineContext, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    try {
      await ctx.clock.sleep(ctx.opts.sweepIntervalMs, signal);
    } catch {
      return;
    }
    try {
      await sweep(ctx);
    } catch (err) {
      if (signal.aborted) return;
      ctx.logger?.error({ err }, "sweep failed");
    }
  }
}
