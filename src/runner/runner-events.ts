/**
 * What a runner tells its supervisor, as typed values (STYLE.md 11): a provider learns that a
 * runner is idle or busy from these, never from log text. Each is logged too.
 */
import type { JobReport } from "./run-job.ts";

export type RunnerEvent =
  | { type: "registered"; runnerId: string }
  | { type: "leased"; runnerId: string; jobId: string; attempt: number }
  | { type: "job_ended"; runnerId: string; jobId: string; report: JobReport };

export type RunnerEventListener = (event: RunnerEvent) => void;

/** The null listener (STYLE.md 7: a null implementation beats an optional callback). */
export const ignoreRunnerEvents: RunnerEventListener = () => {};

/**
 * What a supervisor tells a runner process: drain (end unless a job is already leased; see
 * `RunnerDeps.drain`). SIGTERM stays the stop that ends a running job too. SIGUSR1 is node's
 * inspector; SIGUSR2 is free.
 */
export const DRAIN_SIGNAL = "SIGUSR2" as const;
