/**
 * Why a job run stops early, as one typed value, and what each cause means for the phases after
 * it. Pure: no I/O, no clock. `JobStop` (job-stop.ts) holds the cause of one run.
 *
 * Several causes may arrive (a graceful cancel, then a hard one; a runner stop, then a lost
 * lease). The run keeps the strongest (`strongerCause`): a lost or stale lease beats a cancel (no
 * report is possible), a hard cancel beats a graceful one, a cancel beats a runner stop (the
 * report is a cancel-ack), and a runner stop beats a full log.
 */
import type { CancelMode, CompleteRequest, Failure } from "../protocol/schemas.ts";
import type { StopReason } from "./execute-steps.ts";
import type { LeaseEnd } from "./heartbeat-loop.ts";

export type StopCause =
  | { kind: "cancel"; mode: Exclude<CancelMode, "none"> }
  | { kind: "lease_ended"; why: LeaseEnd }
  | { kind: "runner_stopping" }
  | { kind: "log_limit" };

/** How the run ends toward the control plane. */
export type ReportMode = "complete" | "cancel-ack" | "tail-only";

/** Which artifact rules are uploaded. */
export type ArtifactScope = "all" | "always" | "none";

/** How the current step is stopped for a cause. */
export interface StepStop {
  reason: StopReason;
  graceMs: number;
  message: string;
}

function rank(c: StopCause): number {
  switch (c.kind) {
    case "log_limit": return 1;
    case "runner_stopping": return 2;
    case "cancel": return c.mode === "hard" ? 4 : 3;
    case "lease_ended": return 5;
  }
}

/**
 * The cause a run keeps when `next` arrives while it holds `current`. Once the report started
 * (`reporting`), a lease end no longer changes it: the report has its own bound.
 */
export function strongerCause(current: StopCause | null, next: StopCause, reporting = false): StopCause | null {
  if (reporting && next.kind === "lease_ended") return current;
  if (current === null) return next;
  return rank(next) > rank(current) ? next : current;
}

export function sameCause(a: StopCause, b: StopCause): boolean {
  return a.kind === b.kind && (a.kind !== "cancel" || a.mode === (b as typeof a).mode) && (a.kind !== "lease_ended" || a.why === (b as typeof a).why);
}

/** Whether the cause ends the preparation (source download, sandbox build). A full log does not. */
export function endsPreparation(c: StopCause): boolean {
  return c.kind !== "log_limit";
}

/** How the current step is stopped when `c` arrives (`graceMs` is the cancel grace). */
export function stepStopFor(c: StopCause, cancelGraceMs: number, logMiB: number): StepStop {
  switch (c.kind) {
    case "cancel": return { reason: "canceled", graceMs: c.mode === "hard" ? 0 : cancelGraceMs, message: `canceled (${c.mode})` };
    case "lease_ended": return { reason: "lease_ended", graceMs: 0, message: `lease ${c.why}` };
    case "runner_stopping": return { reason: "runner_stopped", graceMs: cancelGraceMs, message: "the runner was stopped" };
    case "log_limit": return { reason: "log_limit", graceMs: 0, message: `log limit of ${logMiB} MiB reached` };
  }
}

/** The report: none for a lost or stale lease (only the log tail), a cancel-ack after a cancel. */
export function reportModeOf(c: StopCause | null): ReportMode {
  if (c?.kind === "lease_ended") return "tail-only";
  return c?.kind === "cancel" ? "cancel-ack" : "complete";
}

/** All rules on success, `always` ones otherwise; none after a hard cancel or a lost lease. */
export function artifactScopeOf(c: StopCause | null, failure: Failure | null): ArtifactScope {
  if (c?.kind === "lease_ended" || (c?.kind === "cancel" && c.mode === "hard")) return "none";
  return failure === null && c?.kind !== "cancel" ? "all" : "always";
}

/** Whether a failed artifact upload fails the job (only a job that would otherwise succeed). */
export function artifactFailureCounts(c: StopCause | null, failure: Failure | null): boolean {
  return failure === null && c?.kind !== "cancel" && c?.kind !== "lease_ended";
}

/** The failure of a run stopped before its first step (no sandbox, nothing prepared failed). */
export function failureBeforeSteps(c: StopCause | null): Failure {
  return c?.kind === "runner_stopping"
    ? { reason: "runner_error", step: null, message: "the runner was stopped before the first step" }
    : { reason: "step_failed", step: null, message: "canceled before the first step" };
}

/** The job's result for its failure: runtime failures are `error`, step failures `failed`. */
export function resultOf(f: Failure | null): CompleteRequest["result"] {
  if (f === null) return "succeeded";
  return f.reason === "sandbox_error" || f.reason === "source_error" || f.reason === "runner_error" ? "error" : "failed";
}
