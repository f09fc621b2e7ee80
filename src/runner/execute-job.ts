/**
 * The execute phase: the steps in the prepared sandbox. Every stop cause raised while they run
 * stops the current step (its grace per stop-cause.ts); a cause raised before they start stops
 * them at once.
 */
import type { Sandbox } from "../sandbox/types.ts";
import { StepExecutor, type StepsOutcome } from "./execute-steps.ts";
import type { JobRun } from "./job-run.ts";
import { stepStopFor, type StopCause } from "./stop-cause.ts";

export async function executeJob(run: JobRun, sandbox: Sandbox, jobDeadline: number): Promise<StepsOutcome> {
  const { lease, deps, phases, heartbeat } = run;
  const { clock, logger, timings } = deps;
  let started = false;
  const executor = new StepExecutor({
    sandbox, lease, log: run.log, clock, jobDeadline,
    onStep: (i) => {
      run.status.step = i;
      if (i === null || started) return;
      started = true;
      // The step's request has left (onStep comes once it started): now the heartbeat and the log
      // upload (job-run.ts, QUIET_PREPARE_MS); the running status goes at once, beside a heartbeat
      // already held "preparing" (let go, not cut), so the job shows running now, not after the hold.
      run.startTraffic();
      heartbeat.wake();
      phases.mark("firstStepStarted");
      logger.info({ jobId: lease.jobId, phases: phases.snapshot() }, "first step started");
    },
  });
  const stopFor = (c: StopCause) => stepStopFor(c, timings.cancelGraceMs, lease.job.limits.logMiB);
  const early = run.stop.cause;
  if (early !== null) {
    const s = stopFor(early);
    executor.stop(s.reason, 0, s.message);
  }
  const off = run.stop.onRaise((c) => {
    const s = stopFor(c);
    executor.stop(s.reason, s.graceMs, s.message);
  });
  try {
    const outcome = await executor.run();
    phases.mark("stepsDone");
    return outcome;
  } finally {
    off();
  }
}
