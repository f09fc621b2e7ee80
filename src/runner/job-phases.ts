/**
 * When each phase of a job ended, in ms since the lease arrived: logged by the runner in its
 * "job phases" lines (one when the first step starts, one at the end), so a slow pickup or exit
 * can be read from the runner's own log without a profiler. Only the first mark of a name counts.
 */
import type { Clock } from "../base/clock.ts";

export type JobPhase =
  | "jobDir" | "logStarted" | "firstHeartbeat" | "firstLogPut" | "sourceFetched" | "sandboxCreated" | "gitSource"
  | "firstStepStarted" | "stepsDone" | "artifactsDone" | "logFlushed" | "reported" | "heartbeatStopped" | "disposed" | "cleanedUp";

export class JobPhases {
  private readonly t0: number;
  private readonly marks: Partial<Record<JobPhase, number>> = {};

  constructor(private readonly clock: Clock, leasedAt = clock.now()) {
    this.t0 = leasedAt;
  }

  mark(phase: JobPhase): void {
    this.marks[phase] ??= this.clock.now() - this.t0;
  }

  /** The marks so far, in ms since the lease. */
  snapshot(): Partial<Record<JobPhase, number>> {
    return { ...this.marks };
  }
}
