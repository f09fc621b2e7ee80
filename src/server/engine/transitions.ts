/**
 * The attempt state machine's moves (PROTOCOL.md). Called only inside a store transaction;
 * wake-ups are deferred to after the commit.
 */
import { hashToken, newId, newToken } from "../../base/ids.ts";
import type { AttemptState, JobState, Lease } from "../../protocol/schemas.ts";
import type { EngineContext } from "./context.ts";
import type { LeaseWaiter } from "./lease-waiters.ts";
import { matches, parseReqKey } from "./matching.ts";
import { keys } from "./notifier.ts";
import type { TxHooks } from "./state-store.ts";
import type { AttemptRow, JobFailure, JobRow, RunnerRow } from "./types.ts";

export const LIVE_ATTEMPT: ReadonlySet<AttemptState> = new Set(["leased", "running", "canceling"]);
export const TERMINAL_JOB: ReadonlySet<JobState> = new Set(["succeeded", "failed", "errored", "canceled"]);

function changed(ctx: EngineContext, hooks: TxHooks, jobId: string): void {
  hooks.afterCommit(() => {
    ctx.demand.version++;
    ctx.events.emit(keys.demand);
    ctx.events.emit(keys.job(jobId));
  });
}

export function setJobState(ctx: EngineContext, hooks: TxHooks, job: JobRow, to: JobState, reason: string, patch: Partial<JobRow> = {}): void {
  const now = ctx.clock.now();
  const terminal = TERMINAL_JOB.has(to);
  ctx.store.updateJob(job.id, { ...patch, state: to, ...(terminal ? { finishedAt: now } : {}) });
  ctx.store.addTransition(job.id, { at: now, attempt: job.attempt, from: job.state, to, reason });
  job.state = to;
  Object.assign(job, patch);
  if (terminal) job.finishedAt = now;
  changed(ctx, hooks, job.id);
  if (terminal) hooks.afterCommit(() => ctx.events.emit(keys.log(job.id)));
}

export function setAttemptState(
  ctx: EngineContext, hooks: TxHooks, a: AttemptRow, to: AttemptState, reason: string, patch: Partial<AttemptRow> = {},
): void {
  const now = ctx.clock.now();
  const terminal = !LIVE_ATTEMPT.has(to) && to !== "queued";
  const full: Partial<AttemptRow> = { ...patch, state: to, reason, ...(terminal ? { finishedAt: now } : {}) };
  ctx.store.updateAttempt(a.jobId, a.attempt, full);
  ctx.store.addTransition(a.jobId, { at: now, attempt: a.attempt, from: `attempt:${a.state}`, to: `attempt:${to}`, reason });
  Object.assign(a, full);
  if (terminal) {
    // Uploads that did not finish before the attempt ended can never become visible: drop them.
    for (const art of ctx.store.listArtifacts(a.jobId, a.attempt)) {
      if (art.state !== "pending") continue;
      ctx.store.deleteArtifact(art.id);
      hooks.afterCommit(() => ctx.discardUpload(art.id));
    }
    hooks.afterCommit(() => ctx.events.emit(keys.cancel(a.jobId, a.attempt)));
  }
}

/** Queues attempt `n` of `job` and hands it to a waiting runner when one matches. */
export function queueAttempt(ctx: EngineContext, hooks: TxHooks, job: JobRow, n: number, reason: string): void {
  ctx.store.insertAttempt({
    jobId: job.id, attempt: n, state: "queued", runnerId: null, leaseId: null, leaseHash: null, expiresAt: null,
    startedAt: null, finishedAt: null, reason: null, endedBy: null, logBytes: 0, logTruncated: false,
  });
  ctx.store.addTransition(job.id, { at: ctx.clock.now(), attempt: n, from: "attempt:none", to: "attempt:queued", reason });
  job.attempt = n;
  if (job.state === "queued") {
    ctx.store.updateJob(job.id, { attempt: n });
    changed(ctx, hooks, job.id);
  } else setJobState(ctx, hooks, job, "queued", reason, { attempt: n });
  offerToWaiters(ctx, hooks, job);
}

/** Hands a queued job to the oldest waiting runner that can run it, inside this transaction. */
export function offerToWaiters(ctx: EngineContext, hooks: TxHooks, job: JobRow): boolean {
  if (ctx.waiters.size === 0) return false;
  const req = parseReqKey(job.reqKey);
  for (const w of ctx.waiters.list()) {
    if (!matches(req, w.caps)) continue;
    const runner = ctx.store.getRunner(w.runnerId);
    if (!runner || runner.sessionUsed) continue;
    ctx.waiters.remove(w);
    hooks.onRollback(() => ctx.waiters.add(w));
    const lease = claim(ctx, hooks, job, runner);
    settleAfterCommit(hooks, w, lease);
    return true;
  }
  return false;
}

function settleAfterCommit(hooks: TxHooks, w: LeaseWaiter, lease: Lease): void {
  hooks.afterCommit(() => w.settle(lease));
}

/** Gives the job's queued attempt to `runner`: a fresh lease token, fenced to this attempt. */
export function claim(ctx: EngineContext, hooks: TxHooks, job: JobRow, runner: RunnerRow): Lease {
  const now = ctx.clock.now();
  const a = ctx.store.getAttempt(job.id, job.attempt);
  if (!a || a.state !== "queued") throw new Error(`job ${job.id} attempt ${job.attempt} is not queued`);
  const leaseToken = newToken("lease");
  const leaseId = newId("lse");
  const expiresAt = now + ctx.opts.leaseTtlMs;
  setAttemptState(ctx, hooks, a, "leased", `leased by runner ${runner.id}`, {
    runnerId: runner.id, leaseId, leaseHash: hashToken(leaseToken), expiresAt, startedAt: now,
  });
  ctx.store.markSessionUsed(runner.id);
  runner.sessionUsed = true;
  setJobState(ctx, hooks, job, "leased", `attempt ${a.attempt} leased by runner ${runner.id}`);
  hooks.afterCommit(() => ctx.metrics.leased());
  return {
    leaseId, leaseToken, jobId: job.id, runId: job.runId, attempt: a.attempt,
    expiresAt: new Date(expiresAt).toISOString(), ttlMs: ctx.opts.leaseTtlMs, heartbeatIntervalMs: ctx.opts.heartbeatIntervalMs,
    job: { ...job.spec, secrets: job.fork ? {} : job.secrets },
  };
}

/**
 * After an attempt ended without a verdict (lost, runner_error): retry when attempts remain,
 * else end the job errored with `failure`.
 */
export function retryOrError(ctx: EngineContext, hooks: TxHooks, job: JobRow, failure: JobFailure): void {
  if (job.attempt < job.maxAttempts) {
    hooks.afterCommit(() => ctx.metrics.retried());
    queueAttempt(ctx, hooks, job, job.attempt + 1, `retry after attempt ${job.attempt}: ${failure.reason}`);
  } else {
    setJobState(ctx, hooks, job, "errored", `${failure.reason} on attempt ${job.attempt} of ${job.maxAttempts}`, { failure });
  }
}
