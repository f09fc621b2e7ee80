/**
 * One leased job, lease to report, as phases: prepare (source, sandbox) → execute (steps) →
 * collect (artifacts, the report's body) → report (complete, cancel-ack, or the log tail only)
 * → teardown (heartbeat, uploader, dispose, job dir). One typed stop cause (stop-cause.ts),
 * raised by the heartbeat, the runner's stop signal and the log limit, decides how each phase
 * after it behaves. Returns whether the control plane accepted the report.
 *
 * Nothing of the run outlives the returned promise: timers, requests, listeners (also on
 * `deps.signal`), the spool and the job dir are gone; only a dispose that overran
 * `timings.disposeMs` may still be running.
 */
import type { Lease } from "../protocol/schemas.ts";
import { collectArtifacts, reportBody } from "./collect-job.ts";
import type { ArtifactOutcome } from "../artifacts/upload-artifacts.ts";
import type { StepsOutcome } from "./execute-steps.ts";
import { executeJob } from "./execute-job.ts";
import { openJobRun, startJobRun, type RunJobDeps, type RunJobResult } from "./job-run.ts";
import { prepareJob } from "./prepare-job.ts";
import { reportJob } from "./report-job.ts";
import { failureBeforeSteps } from "./stop-cause.ts";
import { teardownJob } from "./teardown-job.ts";

export type { JobReport, RunJobDeps, RunJobResult, RunJobTimings } from "./job-run.ts";

export async function runJob(lease: Lease, deps: RunJobDeps): Promise<RunJobResult> {
  const { clock, logger } = deps;
  const job = lease.job;
  const run = await openJobRun(lease, deps);
  const notRun = (failure: StepsOutcome["failure"]): StepsOutcome => ({
    steps: job.steps.map((s) => ({ name: s.name, exitCode: null, signal: null, startedAt: null, finishedAt: null })), failure, exitCode: null,
  });
  let result: RunJobResult = { report: "unreported", result: null };
  try {
    let outcome: StepsOutcome = { steps: [], failure: null, exitCode: null };
    let artifacts: ArtifactOutcome[] = [];
    try {
      startJobRun(run);
      const jobDeadline = clock.now() + job.limits.timeoutMs;
      const prepFailure = await prepareJob(run, jobDeadline);
      if (prepFailure !== null) {
        run.log.notice(prepFailure.message);
        outcome = notRun(prepFailure);
      } else if (run.sandbox !== null) {
        run.status.phase = "execute";
        outcome = await executeJob(run, run.sandbox, jobDeadline);
      } else {
        outcome = notRun(failureBeforeSteps(run.stop.cause));
      }
      run.status.phase = "collect";
      if (run.sandbox !== null) ({ outcome, artifacts } = await collectArtifacts(run, run.sandbox, outcome));
    } catch (err) {
      logger.error({ err: String(err), stack: (err as Error).stack }, "runner error");
      outcome = { ...outcome, failure: { reason: "runner_error", step: null, message: `runner error: ${(err as Error).message}` } };
    } finally {
      run.startTraffic(); // no step was sent (or none started it): the report needs both
      run.unwireStopSources();
    }
    const body = reportBody(run, outcome, artifacts);
    run.status.phase = "report";
    result = await reportJob(run, body);
    run.phases.mark("reported");
  } finally {
    await teardownJob(run);
    logger.info({ jobId: lease.jobId, report: result.report, phases: run.phases.snapshot() }, "job phases");
  }
  if (result.report === "stale" || result.report === "lost") logger.warn({ jobId: lease.jobId, report: result.report }, "job not reported: lease ended");
  return result;
}
