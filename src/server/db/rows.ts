/** Rows as both SQL stores keep them (snake_case columns, JSON as text, sealed secrets) mapped to engine types. */
import type { JobState } from "../../protocol/schemas.ts";
import type { ArtifactRow, AttemptRow, JobRow, RegistrationRow, RunnerRow, TransitionRow } from "../engine/types.ts";
import { TERMINAL_JOB } from "../engine/transitions.ts";
import { SecretBox } from "../secrets/secret-box.ts";

export type Raw = Record<string, unknown>;

export const JOB_COLS: Record<keyof Omit<JobRow, "id">, string> = {
  runId: "run_id", name: "name", seq: "seq", spec: "spec", secrets: "secrets", fork: "fork", state: "state",
  reqKey: "req_key", attempt: "attempt", maxAttempts: "max_attempts", cancelMode: "cancel_mode",
  cancelDeadline: "cancel_deadline", logLimit: "log_limit", failure: "failure", steps: "steps",
  unschedulable: "unschedulable", createdAt: "created_at", finishedAt: "finished_at",
};
const JSON_JOB_FIELDS = new Set(["spec", "secrets", "failure", "steps"]);
export const ATTEMPT_COLS: Record<keyof Omit<AttemptRow, "jobId" | "attempt">, string> = {
  state: "state", runnerId: "runner_id", leaseId: "lease_id", leaseHash: "lease_hash", expiresAt: "expires_at",
  startedAt: "started_at", finishedAt: "finished_at", reason: "reason", endedBy: "ended_by",
  logBytes: "log_bytes", logTruncated: "log_truncated", logBlob: "log_blob",
};
export const LIVE = "('leased','running','canceling')";
/** The terminal job states as an SQL list. */
export const TERMINAL = `(${[...TERMINAL_JOB].map((t) => `'${t}'`).join(",")})`;
/** kv key of the blob-mark epoch (StateOps.gcEpoch). */
export const GC_EPOCH_KV = "gc.epoch";

/** Job secrets as stored: sealed (secret-box.ts) unless empty; opened only when read. */
export function storedSecrets(box: SecretBox, jobId: string, secrets: Record<string, string>): string {
  return Object.keys(secrets).length === 0 ? "{}" : box.seal(JSON.stringify(secrets), jobId);
}

export function toJob(r: Raw, box: SecretBox): JobRow {
  const row = {
    id: r.id as string, runId: r.run_id as string, name: r.name as string, seq: r.seq as number, fork: r.fork === 1 || r.fork === true,
    state: r.state as JobState, reqKey: r.req_key as string, attempt: r.attempt as number, maxAttempts: r.max_attempts as number,
    cancelMode: r.cancel_mode as JobRow["cancelMode"], cancelDeadline: r.cancel_deadline as number | null, logLimit: r.log_limit as number,
    failure: r.failure == null ? null : JSON.parse(r.failure as string), steps: r.steps == null ? null : JSON.parse(r.steps as string),
    unschedulable: r.unschedulable as string | null, createdAt: r.created_at as number, finishedAt: r.finished_at as number | null,
  } as JobRow;
  // The spec and secrets are parsed only when read: most state moves never look at them.
  LAZY_SPEC.install(row, () => r.spec as string);
  const secrets = r.secrets as string;
  LAZY_SECRETS.install(row, () => (SecretBox.isSealed(secrets) ? box.open(secrets, row.id) : secrets));
  return row;
}

/** JSON text not parsed yet (what a lazy field's slot holds until the first read). */
class Unparsed {
  constructor(readonly text: () => string) {}
}

/**
 * A field parsed from JSON on its first read. Every row shares one getter and setter (the text
 * or value sits in a hidden slot): per-row accessor closures would give each row its own shape,
 * which makes every property access on rows slow.
 */
class LazyJsonField {
  private readonly slot: symbol;
  private readonly descriptor: PropertyDescriptor;
  constructor(readonly name: string) {
    const slot = Symbol(name);
    this.slot = slot;
    this.descriptor = {
      enumerable: true,
      configurable: true,
      get(this: Record<symbol, unknown>) {
        const v = this[slot];
        if (!(v instanceof Unparsed)) return v;
        const parsed: unknown = JSON.parse(v.text());
        this[slot] = parsed;
        return parsed;
      },
      set(this: Record<symbol, unknown>, v: unknown) {
        this[slot] = v;
      },
    };
  }

  install(obj: object, text: () => string): void {
    Object.defineProperty(obj, this.slot, { value: new Unparsed(text), writable: true, enumerable: false, configurable: true });
    Object.defineProperty(obj, this.name, this.descriptor);
  }
}

const LAZY_SPEC = new LazyJsonField("spec");
const LAZY_SECRETS = new LazyJsonField("secrets");

export function toAttempt(r: Raw): AttemptRow {
  return {
    jobId: r.job_id as string, attempt: r.attempt as number, state: r.state as AttemptRow["state"], runnerId: r.runner_id as string | null,
    leaseId: r.lease_id as string | null, leaseHash: r.lease_hash as string | null, expiresAt: r.expires_at as number | null,
    startedAt: r.started_at as number | null, finishedAt: r.finished_at as number | null, reason: r.reason as string | null,
    endedBy: r.ended_by as string | null, logBytes: r.log_bytes as number, logTruncated: r.log_truncated === 1 || r.log_truncated === true,
    logBlob: (r.log_blob as string | null | undefined) ?? null,
  };
}

export function toArtifact(r: Raw): ArtifactRow {
  return {
    id: r.id as string, jobId: r.job_id as string, attempt: r.attempt as number, name: r.name as string, size: r.size as number,
    sha256: r.sha256 as string, mediaType: r.media_type as string, path: (r.path as string | null) ?? null, state: r.state as ArtifactRow["state"], createdAt: r.created_at as number,
  };
}

export function sqlValue(key: string, v: unknown): unknown {
  if (v === undefined) return null;
  if (typeof v === "boolean") return v ? 1 : 0;
  if (JSON_JOB_FIELDS.has(key)) return v === null ? null : JSON.stringify(v);
  return v;
}

export function toRunner(r: Raw): RunnerRow {
  return {
    id: r.id as string, name: r.name as string, version: r.version as string, capabilities: JSON.parse(r.capabilities as string),
    sessionHash: r.session_hash as string, sessionExpiresAt: r.session_expires_at as number, sessionUsed: r.session_used === 1 || r.session_used === true, createdAt: r.created_at as number,
  };
}

export function toRegistration(r: Raw): RegistrationRow {
  return { hash: r.hash as string, labels: JSON.parse(r.labels as string), expiresAt: r.expires_at as number, usedAt: r.used_at as number | null };
}

export function toTransition(r: Raw): TransitionRow {
  return { at: r.at as number, attempt: r.attempt as number | null, from: r.from_state as string, to: r.to_state as string, reason: r.reason as string };
}
