/**
 * Periodic sweep: expired leases become lost (then retry or errored); silent cancels are
 * hard-stopped. Replicas on one database sweep one at a time: only the one that leads (store).
 * Each sweep stamps `SWEEP_KV`, so a starting replica can tell a fleet that kept sweeping from
 * one that was down (see `leasesNeedGrace`).
 */
import type { EngineContext } from "./context.ts";
import { retryOrError, setAttemptState, setJobState, LIVE_ATTEMPT } from "./transitions.ts";

export const SWEEP_KV = "sweeper.last";

export async function sweep(ctx: EngineContext): Promise<{ lost: number; hardStopped: number }> {
  return ctx.store.write(async (tx) => {
    const now = ctx.clock.now();
    await tx.setKv(SWEEP_KV, String(now));
    let lost = 0;
    let hardStopped = 0;
    for (const a of await tx.expiredAttempts(now)) {
      const job = await tx.getJob(a.jobId);
      if (!job) continue;
      lost++;
      tx.afterCommit(() => ctx.metrics.leaseExpired());
      await setAttemptState(ctx, tx, a, "lost", `no heartbeat for ${ctx.opts.leaseTtlMs} ms (runner_lost)`, { endedBy: "lost" });
      if (job.attempt !== a.attempt) continue;
      if (job.state === "canceling") {
        await setJobState(ctx, tx, job, "canceled", `attempt ${a.attempt} lost while canceling`);
      } else {
        await retryOrError(ctx, tx, job, { reason: "runner_lost", step: null, message: `attempt ${a.attempt}: lease expired without a heartbeat` });
      }
    }
    for (const job of await tx.cancelOverdue(now)) {
      const a = await tx.getAttempt(job.id, job.attempt);
      if (a && LIVE_ATTEMPT.has(a.state)) await setAttemptState(ctx, tx, a, "canceled", `hard-stop: no cancel-ack within ${ctx.opts.hardStopMs} ms`, { endedBy: "hard-stop" });
      await setJobState(ctx, tx, job, "canceled", `hard-stopped: no cancel-ack within ${ctx.opts.hardStopMs} ms`);
      hardStopped++;
    }
    return { lost, hardStopped };
  });
}

/** Runs `sweep` every `sweepIntervalMs` until `signal` aborts. */
export async function runSweeper(ctx: EngineContext, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    try {
      ctx.roles.sweeper = await ctx.store.leadSweeper();
    } catch (err) {
      ctx.roles.sweeper = false;
      ctx.logger?.warn({ err }, "could not take or keep the sweeper role");
    }
    try {
      await ctx.clock.sleep(ctx.opts.sweepIntervalMs, signal);
    } catch {
      return;
    }
    try {
      if (ctx.roles.sweeper) await sweep(ctx);
    } catch (err) {
      if (signal.aborted) return;
      ctx.logger?.error({ err }, "sweep failed");
    }
  }
}

/**
 * After a start: did the fleet stop sweeping for long enough that live leases must get a fresh
 * ttl (runners kept heartbeating while no server answered)? Not when another replica swept
 * within a few intervals: it kept judging leases, and extending them all would keep dead runners'
 * jobs for a whole ttl more.
 */
export async function leasesNeedGrace(ctx: EngineContext): Promise<boolean> {
  const last = Number((await ctx.store.getKv(SWEEP_KV)) ?? 0);
  return ctx.clock.now() - last > 3 * ctx.opts.sweepIntervalMs;
}
