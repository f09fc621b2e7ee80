/** Rows of the control plane's state, as the engine sees them (independent of the store). */
import type { AttemptState, CancelMode, JobState, StepReport, SubmittedJobSpec, Capabilities } from "../../protocol/schemas.ts";

export interface JobFailure {
  reason: string;
  step: number | null;
  message: string;
}

export interface JobRow {
  id: string;
  runId: string;
  name: string;
  seq: number;
  spec: SubmittedJobSpec;
  secrets: Record<string, string>;
  fork: boolean;
  state: JobState;
  reqKey: string;
  attempt: number;
  maxAttempts: number;
  cancelMode: CancelMode;
  cancelDeadline: number | null;
  logLimit: number;
  failure: JobFailure | null;
  steps: StepReport[] | null;
  unschedulable: string | null;
  createdAt: number;
  finishedAt: number | null;
}

export interface AttemptRow {
  jobId: string;
  attempt: number;
  state: AttemptState;
  runnerId: string | null;
  leaseId: string | null;
  leaseHash: string | null;
  expiresAt: number | null;
  startedAt: number | null;
  finishedAt: number | null;
  reason: string | null;
  /** How the attempt ended: "complete", "cancel-ack", "lost", "hard-stop", "canceled". */
  endedBy: string | null;
  logBytes: number;
  logTruncated: boolean;
  /** sha256 of the blob holding the whole log once it was archived (log-archive.ts); null while the state store holds it. */
  logBlob: string | null;
}

export interface RunnerRow {
  id: string;
  name: string;
  version: string;
  capabilities: Capabilities;
  sessionHash: string;
  sessionExpiresAt: number;
  sessionUsed: boolean;
  createdAt: number;
}

export interface RegistrationRow {
  hash: string;
  labels: string[];
  expiresAt: number;
  usedAt: number | null;
}

export interface ArtifactRow {
  id: string;
  jobId: string;
  attempt: number;
  name: string;
  size: number;
  sha256: string;
  mediaType: string;
  /** Relative path of a single file in the workspace (null: a tar, or an older runner). */
  path: string | null;
  state: "pending" | "committed";
  createdAt: number;
}

export interface TransitionRow {
  at: number;
  attempt: number | null;
  from: string;
  to: string;
  reason: string;
}

export interface DemandRow {
  reqKey: string;
  state: JobState;
  unschedulable: boolean;
  count: number;
}
