/** Job API operations: submit, cancel, status, list (secrets never leave through here). */
import { DeltaError } from "../../base/errors.ts";
import { newId } from "../../base/ids.ts";
import type { JobState, JobStatus, SubmitJobRequest } from "../../protocol/schemas.ts";
import { blobCollectingError } from "./collector.ts";
import type { EngineContext } from "./context.ts";
import { reqKeyOf, requirementsOf, unschedulableReason } from "./matching.ts";
import { keys } from "./notifier.ts";
import type { StateTx } from "./state-store.ts";
import { queueAttempt, setAttemptState, setJobState, TERMINAL_JOB, LIVE_ATTEMPT, wake } from "./transitions.ts";
import type { JobRow } from "./types.ts";

const MiB = 1024 * 1024;

/** Times a submit re-checks its source archive when blob marks changed meanwhile (collector.ts). */
const SOURCE_CHECKS = 3;

export async function submitJob(ctx: EngineContext, body: SubmitJobRequest, hasBlob: (sha256: string) => Promise<boolean>): Promise<{ jobId: string; runId: string }> {
  const source = body.spec.source;
  if (source.kind !== "archive") return ctx.store.write((tx) => insertJob(ctx, tx, body));
  // The archive must still be there when the job row references it: no mark on it now, and no
  // mark made or cleared since the store was asked (else ask again).
  for (let i = 0; i < SOURCE_CHECKS; i++) {
    const epoch = await ctx.store.gcEpoch();
    if (!(await hasBlob(source.sha256))) {
      throw new DeltaError("E_INVALID", `source archive ${source.sha256} is not in the store (upload it with POST /v1/sources)`);
    }
    const done = await ctx.store.write(async (tx) => {
      if (await tx.blobCollecting(source.sha256)) throw blobCollectingError(source.sha256);
      return (await tx.gcEpoch()) === epoch ? insertJob(ctx, tx, body) : null;
    });
    if (done) return done;
  }
  throw blobCollectingError(source.sha256);
}

async function insertJob(ctx: EngineContext, tx: StateTx, body: SubmitJobRequest): Promise<{ jobId: string; runId: string }> {
  const req = requirementsOf(body.spec);
  const now = ctx.clock.now();
  const job: JobRow = {
    id: newId("job"), runId: newId("run"), name: body.spec.name, seq: await tx.nextJobSeq(), spec: body.spec,
    secrets: body.fork ? {} : (body.secrets ?? {}), fork: body.fork, state: "queued", reqKey: reqKeyOf(req),
    attempt: 0, maxAttempts: ctx.opts.maxAttempts, cancelMode: "none", cancelDeadline: null,
    logLimit: Math.min(ctx.opts.logLimitBytes, body.spec.limits.logMiB * MiB), failure: null, steps: null,
    unschedulable: unschedulableReason(req, ctx.capacity.pools), createdAt: now, finishedAt: null,
  };
  await tx.insertJob(job);
  await tx.addTransition(job.id, { at: now, attempt: null, from: "none", to: "queued", reason: "submitted" });
  await queueAttempt(ctx, tx, job, 1, "attempt 1 queued");
  return { jobId: job.id, runId: job.runId };
}

export async function cancelJob(ctx: EngineContext, jobId: string, mode: "graceful" | "hard"): Promise<{ jobId: string; state: JobState }> {
  return ctx.store.write(async (tx) => {
    const job = await tx.getJob(jobId);
    if (!job) throw new DeltaError("E_NOT_FOUND", `no job ${jobId}`);
    if (TERMINAL_JOB.has(job.state)) return { jobId, state: job.state };
    const a = await tx.getAttempt(job.id, job.attempt);
    if (job.state === "queued" || !a || a.state === "queued") {
      if (a && a.state === "queued") await setAttemptState(ctx, tx, a, "canceled", "canceled while queued", { endedBy: "canceled" });
      await setJobState(ctx, tx, job, "canceled", "canceled while queued");
      return { jobId, state: job.state };
    }
    if (job.state === "canceling") {
      if (mode === "hard" && job.cancelMode !== "hard") {
        await tx.updateJob(job.id, { cancelMode: "hard" });
        await tx.addTransition(job.id, { at: ctx.clock.now(), attempt: job.attempt, from: "canceling", to: "canceling", reason: "cancel escalated to hard" });
        wake(ctx, tx, keys.cancel(job.id, job.attempt));
      }
      return { jobId, state: job.state };
    }
    const deadline = ctx.clock.now() + ctx.opts.hardStopMs;
    if (LIVE_ATTEMPT.has(a.state)) await setAttemptState(ctx, tx, a, "canceling", `cancel requested (${mode})`);
    await setJobState(ctx, tx, job, "canceling", `cancel requested (${mode})`, { cancelMode: mode, cancelDeadline: deadline });
    wake(ctx, tx, keys.cancel(job.id, job.attempt));
    return { jobId, state: job.state };
  });
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export async function jobStatus(ctx: EngineContext, jobId: string): Promise<JobStatus> {
  const job = await ctx.store.getJob(jobId);
  if (!job) throw new DeltaError("E_NOT_FOUND", `no job ${jobId}`);
  const [attempts, arts, transitions] = await Promise.all([
    ctx.store.listAttempts(jobId), ctx.store.listArtifacts(jobId, job.attempt), ctx.store.listTransitions(jobId),
  ]);
  const current = attempts.find((a) => a.attempt === job.attempt);
  return {
    jobId: job.id, runId: job.runId, name: job.name, state: job.state, fork: job.fork,
    createdAt: new Date(job.createdAt).toISOString(), finishedAt: iso(job.finishedAt),
    unschedulable: job.state === "queued" ? job.unschedulable : null,
    failure: job.failure,
    attempts: attempts.map((a) => ({
      attempt: a.attempt, state: a.state, runnerId: a.runnerId, startedAt: iso(a.startedAt), finishedAt: iso(a.finishedAt), reason: a.reason,
    })),
    steps: job.steps ?? [],
    artifacts: arts.filter((x) => x.state === "committed")
      .map((x) => ({ artifactId: x.id, name: x.name, size: x.size, sha256: x.sha256, mediaType: x.mediaType, path: x.path })),
    log: { bytes: current?.logBytes ?? 0, truncated: current?.logTruncated ?? false },
    transitions: transitions.map((t) => ({ at: new Date(t.at).toISOString(), attempt: t.attempt, from: t.from, to: t.to, reason: t.reason })),
  };
}
