/**
 * Runs a job's steps in one sandbox, in order. The first failing step fails the job and the rest
 * are skipped (exitCode null, `step-skipped` marker). `stop()` ends the current step (cancel,
 * job timeout, log limit, lost lease) and skips the rest. Step output goes to the JobLog only.
 */
import { WAIT_CALLED_OFF, type Clock } from "../base/clock.ts";
import { defaults } from "../config/defaults.ts";
import type { JobLog } from "../logs/job-log.ts";
import type { Failure, FailureReason, Lease, StepReport } from "../protocol/schemas.ts";
import type { Sandbox, StepProcess, StepResult } from "../sandbox/types.ts";
import { stepEnv } from "./step-env.ts";

/** Why the runner stopped the steps itself. */
export type StopReason = "canceled" | "timeout" | "log_limit" | "lease_ended" | "runner_stopped";

export interface StepsOutcome {
  steps: StepReport[];
  failure: Failure | null;
  /** The failing step's exit code, 0 when all succeeded, null when none ran to an exit. */
  exitCode: number | null;
}

export interface ExecuteStepsOptions {
  sandbox: Sandbox;
  lease: Lease;
  log: JobLog;
  clock: Clock;
  /** Clock time by which the whole job must be done (limits.timeoutMs). */
  jobDeadline: number;
  /** Called when the current step changes (heartbeat status): once the step was started (its request sent), and with null at the end. */
  onStep?: (index: number | null) => void;
}

/** A step's result, or why it could not start (invalid working directory, sandbox gone). */
type StepRun = StepResult & { startError?: string };

export class StepExecutor {
  private readonly o: ExecuteStepsOptions;
  private stopReason: StopReason | null = null;
  private stopMessage = "";
  private current: StepProcess | null = null;
  private readonly stopAc = new AbortController();

  constructor(opts: ExecuteStepsOptions) {
    this.o = opts;
  }

  get stoppedFor(): StopReason | null {
    return this.stopReason;
  }

  /** Stops the current step (SIGTERM, then SIGKILL after `graceMs`) and skips the rest. First reason wins; a later call may shorten the grace. */
  stop(reason: StopReason, graceMs: number, message: string): void {
    if (this.stopReason === null) {
      this.stopReason = reason;
      this.stopMessage = message;
      this.stopAc.abort();
    }
    this.current?.stop(graceMs);
  }

  async run(): Promise<StepsOutcome> {
    const { lease, log, clock } = this.o;
    const steps: StepReport[] = [];
    let failure: Failure | null = null;
    let exitCode: number | null = 0;
    const timer = new AbortController();
    const left = this.o.jobDeadline - clock.now();
    clock.sleep(Math.max(0, left), AbortSignal.any([timer.signal, this.stopAc.signal])).then(
      () => this.stop("timeout", 0, `job timeout of ${lease.job.limits.timeoutMs} ms exceeded`),
      () => {},
    );
    try {
      for (const [index, step] of lease.job.steps.entries()) {
        if (failure !== null || this.stopReason !== null) {
          log.marker("step-skipped", { index, name: step.name, exitCode: null, reason: failure ? "previous step failed" : this.stopReason });
          steps.push({ name: step.name, exitCode: null, signal: null, startedAt: null, finishedAt: null });
          continue;
        }
        const startedAt = new Date(clock.now()).toISOString();
        log.marker("step-start", { index, name: step.name, startedAt });
        // runStep starts the step before it first awaits: the step goes before what onStep sets off
        const running = this.runStep(index);
        this.o.onStep?.(index);
        const res = await running;
        const finishedAt = new Date(clock.now()).toISOString();
        steps.push({ name: step.name, exitCode: res.exitCode, signal: res.signal, startedAt, finishedAt });
        const reason = this.failureOf(res);
        log.marker("step-end", {
          index, name: step.name, exitCode: res.exitCode, signal: res.signal, durationMs: res.durationMs,
          result: reason === null ? "succeeded" : reason === "step_failed" ? "failed" : reason,
        });
        if (reason !== null) {
          failure = { reason, step: index, message: this.messageOf(res, reason, step.name) };
          exitCode = res.exitCode;
        }
      }
    } finally {
      timer.abort(WAIT_CALLED_OFF);
      this.o.onStep?.(null);
    }
    if (failure === null && this.stopReason !== null) failure = { reason: this.reasonOfStop(), step: null, message: this.stopMessage };
    return { steps, failure, exitCode };
  }

  private async runStep(index: number): Promise<StepRun> {
    const { lease, log, clock, sandbox } = this.o;
    const step = lease.job.steps[index];
    if (!step) throw new Error(`no step ${index}`);
    const timeoutMs = Math.max(1, Math.min(step.timeoutMs ?? defaults.stepTimeoutMs, this.o.jobDeadline - clock.now()));
    const started = clock.now();
    let proc: StepProcess;
    // The log's writers consume each chunk in the call (masker and spool copy what they keep).
    const out = log.stream();
    const err = log.stream();
    try {
      proc = sandbox.start({
        run: step.run, shell: step.shell ?? null, workingDirectory: step.workingDirectory ?? null, timeoutMs,
        env: stepEnv(lease, step, index, sandbox.workspaceInSandbox),
      }, { stdout: (c) => out.write(c), stderr: (c) => err.write(c) });
    } catch (e) {
      out.end();
      err.end();
      log.notice(`step ${index} (${step.name}) could not start: ${(e as Error).message}`);
      return { exitCode: null, signal: null, durationMs: clock.now() - started, limit: null, stopped: false, startError: (e as Error).message };
    }
    this.current = proc;
    try {
      return await proc.done;
    } finally {
      out.end();
      err.end();
      this.current = null;
    }
  }

  private failureOf(res: StepRun): FailureReason | null {
    if (res.startError !== undefined) return "sandbox_error";
    if (res.limit) return res.limit.reason;
    if (this.stopReason !== null) return this.reasonOfStop();
    if (res.exitCode !== 0) return "step_failed";
    return null;
  }

  private reasonOfStop(): FailureReason {
    switch (this.stopReason) {
      case "timeout": return "timeout";
      case "log_limit": return "log_limit";
      case "runner_stopped": return "runner_error";
      default: return "step_failed";
    }
  }

  private messageOf(res: StepRun, reason: FailureReason, name: string): string {
    if (res.limit) return res.limit.message;
    if (this.stopReason !== null && reason !== "step_failed") return this.stopMessage;
    if (this.stopReason === "canceled") return `step ${name} stopped: ${this.stopMessage}`;
    if (res.startError !== undefined) return `step ${name} could not start: ${res.startError}`;
    return res.signal ? `step ${name} was killed by ${res.signal}` : `step ${name} exited with ${res.exitCode}`;
  }
}
