/**
 * The collect phase: the artifacts (which rules per stop-cause.ts, cut by a lease end), then the
 * report's body (a full log fails an otherwise successful job) and the log's `job-end` marker.
 */
import { uploadArtifacts, type ArtifactOutcome } from "../artifacts/upload-artifacts.ts";
import type { CompleteRequest, Failure } from "../protocol/schemas.ts";
import type { Sandbox } from "../sandbox/types.ts";
import type { StepsOutcome } from "./execute-steps.ts";
import type { JobRun } from "./job-run.ts";
import { artifactFailureCounts, artifactScopeOf, resultOf } from "./stop-cause.ts";

export type ReportBody = Omit<CompleteRequest, "log">;

export async function collectArtifacts(run: JobRun, sandbox: Sandbox, outcome: StepsOutcome): Promise<{ outcome: StepsOutcome; artifacts: ArtifactOutcome[] }> {
  const { lease, deps, log } = run;
  const { client } = deps;
  const scope = artifactScopeOf(run.stop.cause, outcome.failure);
  if (scope === "none") return { outcome, artifacts: [] };
  const rules = lease.job.artifacts.filter((r) => scope === "all" || r.when === "always");
  const leaseEnded = run.stop.signalWhen((c) => c.kind === "lease_ended", "artifact upload stopped");
  let artifacts: ArtifactOutcome[];
  try {
    artifacts = await uploadArtifacts({
      workspace: sandbox.workspaceOnHost, stagingDir: deps.jobDir, rules, signal: leaseEnded.signal,
      sink: {
        create: (body, signal) => client.createArtifact(lease.leaseToken, body, { signal }),
        upload: (target, file, size, signal) => client.uploadArtifact(lease.leaseToken, target, file, size, { signal }),
      },
    });
  } finally {
    leaseEnded.release();
  }
  for (const a of artifacts) {
    for (const n of a.notes) log.notice(n);
    if (a.artifactId) log.notice(`artifact ${a.name}: ${a.files} file(s), ${a.size} bytes, sha256 ${a.sha256}`);
  }
  const broken = artifacts.find((a) => a.error !== null);
  if (broken && artifactFailureCounts(run.stop.cause, outcome.failure)) {
    const failure: Failure = { reason: "runner_error", step: null, message: `artifact ${broken.name} could not be uploaded: ${(broken.error as Error).message}` };
    outcome = { ...outcome, failure };
  }
  run.phases.mark("artifactsDone");
  return { outcome, artifacts };
}

/** The report's body (without the log summary); writes the `job-end` marker. */
export function reportBody(run: JobRun, outcome: StepsOutcome, artifacts: ArtifactOutcome[]): ReportBody {
  const failure: Failure | null = run.spool.truncated && outcome.failure === null
    ? { reason: "log_limit", step: null, message: `log limit of ${run.lease.job.limits.logMiB} MiB reached` }
    : outcome.failure;
  const body: ReportBody = {
    result: resultOf(failure),
    exitCode: failure === null ? 0 : outcome.exitCode,
    failure,
    steps: outcome.steps,
    artifacts: artifacts.flatMap((a) => (a.artifactId ? [a.artifactId] : [])),
  };
  run.log.marker("job-end", { result: body.result, exitCode: body.exitCode, failure: body.failure });
  return body;
}
