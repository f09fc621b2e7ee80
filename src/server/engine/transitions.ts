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
import type { StateTx, TxHooks } from "./state-store.ts";
import type { AttemptRow, JobFailure, JobRow, RunnerRow } from "./types.ts";

export const LIVE_ATTEMPT: ReadonlySet<AttemptState> = new Set(["leased", "running", "canceling"]);
export const TERMINAL_JOB: ReadonlySet<JobState> = new Set(["succeeded", "failed", "errored", "canceled"]);

/** Wakes the waiters of `key` here and, through the store, on every other replica, once `tx` commits. */
export function wake(ctx: EngineContext, tx: TxHooks, key: string): void {
  tx.afterCommit(() => {
    if (key === keys.demand) ctx.demand.version++;
    ctx.events.emit(key);
  });
  tx.broadcast(key);
}

function changed(ctx: EngineContext, tx: TxHooks, jobId: string): void {
  wake(ctx, tx, keys.demand);
  wake(ctx, tx, keys.job(jobId));
}

export async function setJobState(ctx: EngineContext, tx: StateTx, job: JobRow, to: JobState, reason: string, patch: Partial<JobRow> = {}): Promise<void> {
  const now = ctx.clock.now();
  const terminal = TERMINAL_JOB.has(to);
  // A terminal job never runs again: its secrets are deleted with the move (secrets at rest).
  await tx.updateJob(job.id, { ...patch, state: to, ...(terminal ? { finishedAt: now, secrets: {} } : {}) });
  await tx.addTransition(job.id, { at: now, attempt: job.attempt, from: job.state, to, reason });
  job.state = to;
  Object.assign(job, patch);
  if (terminal) {
    job.finishedAt = now;
    job.secrets = {};
  }
  changed(ctx, tx, job.id);
  if (terminal) wake(ctx, tx, keys.log(job.id));
}

export async function setAttemptState(
  ctx: EngineContext, tx: StateTx, a: AttemptRow, to: AttemptState, reason: string, patch: Partial<AttemptRow> = {},
): Promise<void> {
  const now = ctx.clock.now();
  const terminal = !LIVE_ATTEMPT.has(to) && to !== "queued";
  const full: Partial<AttemptRow> = { ...patch, state: to, reason, ...(terminal ? { finishedAt: now } : {}) };
  await tx.updateAttempt(a.jobId, a.attempt, full);
  await tx.addTransition(a.jobId, { at: now, attempt: a.attempt, from: `attempt:${a.state}`, to: `attempt:${to}`, reason });
  Object.assign(a, full);
  if (terminal) {
    // Uploads that did not finish before the attempt ended can never become visible: drop them.
    for (const art of await tx.listArtifacts(a.jobId, a.attempt)) {
      if (art.state !== "pending") continue;
      await tx.deleteArtifact(art.id);
      tx.afterCommit(() => ctx.discardUpload(art.id));
    }
    wake(ctx, tx, keys.cancel(a.jobId, a.attempt));
  }
}

/** Queues attempt `n` of `job` and hands it to a waiting runner when one matches. */
export async function queueAttempt(ctx: EngineContext, tx: StateTx, job: JobRow, n: number, reason: string): Promise<void> {
  await tx.insertAttempt({
    jobId: job.id, attempt: n, state: "queued", runnerId: null, leaseId: null, leaseHash: null, expiresAt: null,
    startedAt: null, finishedAt: null, reason: null, endedBy: null, logBytes: 0, logTruncated: false, logBlob: null,
  });
  await tx.addTransition(job.id, { at: ctx.clock.now(), attempt: n, from: "attempt:none", to: "attempt:queued", reason });
  job.attempt = n;
  if (job.state === "queued") {
    await tx.updateJob(job.id, { attempt: n });
    changed(ctx, tx, job.id);
  } else await setJobState(ctx, tx, job, "queued", reason, { attempt: n });
  if (!(await offerToWaiters(ctx, tx, job))) tx.broadcast(keys.queued);
}

/** Hands a queued job to the oldest waiting runner that can run it, inside this transaction. */
export async function offerToWaiters(ctx: EngineContext, tx: StateTx, job: JobRow): Promise<boolean> {
  if (ctx.waiters.size === 0) return false;
  const req = parseReqKey(job.reqKey);
  for (const w of ctx.waiters.list()) {
    if (!matches(req, w.caps)) continue;
    const runner = await tx.getRunner(w.runnerId);
    if (!runner || runner.sessionUsed) continue;
    // Gone while the runner row was read (a replica's read may wait for its lock).
    if (!ctx.waiters.remove(w)) continue;
    tx.onRollback(() => ctx.waiters.add(w));
    const lease = await claim(ctx, tx, job, runner);
    settleAfterCommit(tx, w, lease);
    return true;
  }
  return false;
}

function settleAfterCommit(hooks: TxHooks, w: LeaseWaiter, lease: Lease): void {
  hooks.afterCommit(() => w.settle(lease));
}

/** Gives the job's queued attempt to `runner`: a fresh lease token, fenced to this attempt. */
export async function claim(ctx: EngineContext, tx: StateTx, job: JobRow, runner: RunnerRow): Promise<Lease> {
  const now = ctx.clock.now();
  const a = await tx.getAttempt(job.id, job.attempt);
  if (!a || a.state !== "queued") throw new Error(`job ${job.id} attempt ${job.attempt} is not queued`);
  const leaseToken = newToken("lease");
  const leaseId = newId("lse");
  const expiresAt = now + ctx.opts.leaseTtlMs;
  const leaseHash = hashToken(leaseToken);
  await setAttemptState(ctx, tx, a, "leased", `leased by runner ${runner.id}`, {
    runnerId: runner.id, leaseId, leaseHash, expiresAt, startedAt: now,
  });
  await tx.markSessionUsed(runner.id);
  runner.sessionUsed = true;
  await setJobState(ctx, tx, job, "leased", `attempt ${a.attempt} leased by runner ${runner.id}`);
  tx.afterCommit(() => {
    ctx.metrics.leased();
    ctx.knownTokens.add(leaseHash, Infinity);
  });
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
export async function retryOrError(ctx: EngineContext, tx: StateTx, job: JobRow, failure: JobFailure): Promise<void> {
  if (job.attempt < job.maxAttempts) {
    tx.afterCommit(() => ctx.metrics.retried());
    await queueAttempt(ctx, tx, job, job.attempt + 1, `retry after attempt ${job.attempt}: ${failure.reason}`);
  } else {
    await setJobState(ctx, tx, job, "errored", `${failure.reason} on attempt ${job.attempt} of ${job.maxAttempts}`, { failure });
  }
}
