/**
 * The prepare phase: the source archive, then the sandbox (`run.sandbox`, owned by the run from
 * the moment it exists), then a git source inside it. Stopped by any stop cause but a full log.
 * Returns the failure that ends the job before its first step, or null.
 */
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { isDeltaError } from "../base/errors.ts";
import type { Failure } from "../protocol/schemas.ts";
import { cloneGitSource } from "./git-source.ts";
import type { JobRun } from "./job-run.ts";
import { endsPreparation } from "./stop-cause.ts";

export async function prepareJob(run: JobRun, jobDeadline: number): Promise<Failure | null> {
  const { lease, deps, phases, log } = run;
  const { client, clock } = deps;
  const job = lease.job;
  const stopped = run.stop.signalWhen(endsPreparation, "preparation stopped");
  const signal = stopped.signal;
  let sourceArchive: string | null = null;
  try {
    if (job.source.kind === "archive") {
      sourceArchive = join(deps.jobDir, "source.tar");
      try {
        await client.downloadSource(lease.leaseToken, sourceArchive, { signal });
        phases.mark("sourceFetched");
      } catch (err) {
        if (!signal.aborted) return { reason: "source_error", step: null, message: `cannot fetch the source archive: ${(err as Error).message}` };
      }
    }
    if (signal.aborted) return null;
    try {
      run.sandbox = await deps.sandboxFactory.create({
        jobId: lease.jobId, slot: deps.slot, image: job.image, limits: job.limits, network: job.network, sourceArchive,
        caches: job.caches, auditLogPath: join(deps.jobDir, "network-audit.jsonl"),
        // Writable caches that hold any of these are not saved (caches never carry secrets).
        secretValues: Object.values(job.secrets),
      }, signal);
      phases.mark("sandboxCreated");
    } catch (err) {
      if (signal.aborted) return null;
      return { reason: isDeltaError(err, "E_SOURCE") ? "source_error" : "sandbox_error", step: null, message: (err as Error).message };
    }
    if (sourceArchive !== null) {
      await rm(sourceArchive, { force: true });
      sourceArchive = null;
    }
    if (job.source.kind !== "git" || signal.aborted) return null;
    const failure = await cloneGitSource(run.sandbox, job.source, log, Math.max(1, jobDeadline - clock.now()));
    phases.mark("gitSource");
    return failure;
  } finally {
    stopped.release();
    if (sourceArchive !== null) await rm(sourceArchive, { force: true });
  }
}
