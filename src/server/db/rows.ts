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

/**
 * The jobs columns in the order `toJobValues` takes them. The SQLite store selects them by name
 * and reads rows as arrays (better-sqlite3's `.raw()`): no object with 19 named properties per row.
 */
export const JOB_ROW_COLS = [
  "id", "run_id", "name", "seq", "spec", "secrets", "fork", "state", "req_key", "attempt", "max_attempts", "cancel_mode",
  "cancel_deadline", "log_limit", "failure", "steps", "unschedulable", "created_at", "finished_at",
] as const;
/** Index of `seq` in JOB_ROW_COLS. */
export const JOB_ROW_SEQ = JOB_ROW_COLS.indexOf("seq");

export function toJob(r: Raw, box: SecretBox): JobRow {
  return toJobValues(JOB_ROW_COLS.map((c) => r[c]), box);
}

/** A job row from its column values in JOB_ROW_COLS order. */
export function toJobValues(v: readonly unknown[], box: SecretBox): JobRow {
  const [id, runId, name, seq, spec, secrets, fork, state, reqKey, attempt, maxAttempts, cancelMode, cancelDeadline, logLimit, failure, steps, unschedulable, createdAt, finishedAt] = v;
  const row = {
    id: id as string, runId: runId as string, name: name as string, seq: seq as number, fork: fork === 1 || fork === true,
    state: state as JobState, reqKey: reqKey as string, attempt: attempt as number, maxAttempts: maxAttempts as number,
    cancelMode: cancelMode as JobRow["cancelMode"], cancelDeadline: cancelDeadline as number | null, logLimit: logLimit as number,
    failure: failure == null ? null : JSON.parse(failure as string), steps: steps == null ? null : JSON.parse(steps as string),
    unschedulable: unschedulable as string | null, createdAt: createdAt as number, finishedAt: finishedAt as number | null,
  } as JobRow;
  // The spec and secrets are parsed only when read: most state moves never look at them.
  LAZY_SPEC.install(row, () => spec as string);
  LAZY_SECRETS.install(row, () => (SecretBox.isSealed(secrets as string) ? box.open(secrets as string, row.id) : (secrets as string)));
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

/** The attempts columns in the order `toAttemptValues` takes them (see JOB_ROW_COLS). */
export const ATTEMPT_ROW_COLS = [
  "job_id", "attempt", "state", "runner_id", "lease_id", "lease_hash", "expires_at", "started_at", "finished_at", "reason", "ended_by",
  "log_bytes", "log_truncated", "log_blob",
] as const;

export function toAttempt(r: Raw): AttemptRow {
  return toAttemptValues(ATTEMPT_ROW_COLS.map((c) => r[c]));
}

/** An attempt row from its column values in ATTEMPT_ROW_COLS order. */
export function toAttemptValues(v: readonly unknown[]): AttemptRow {
  const [jobId, attempt, state, runnerId, leaseId, leaseHash, expiresAt, startedAt, finishedAt, reason, endedBy, logBytes, logTruncated, logBlob] = v;
  return {
    jobId: jobId as string, attempt: attempt as number, state: state as AttemptRow["state"], runnerId: runnerId as string | null,
    leaseId: leaseId as string | null, leaseHash: leaseHash as string | null, expiresAt: expiresAt as number | null,
    startedAt: startedAt as number | null, finishedAt: finishedAt as number | null, reason: reason as string | null,
    endedBy: endedBy as string | null, logBytes: logBytes as number, logTruncated: logTruncated === 1 || logTruncated === true,
    logBlob: (logBlob as string | null | undefined) ?? null,
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
