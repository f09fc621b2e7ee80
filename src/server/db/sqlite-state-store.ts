/** StateStore on SQLite: prepared statements cached once, rows mapped to engine types. */
import { dirname, join } from "node:path";
import type { Statement } from "better-sqlite3";
import type { JobState } from "../../protocol/schemas.ts";
import type { StateStore, TxHooks } from "../engine/state-store.ts";
import type { ArtifactRow, AttemptRow, DemandRow, JobRow, RegistrationRow, RunnerRow, TransitionRow } from "../engine/types.ts";
import type { Durability } from "../options.ts";
import { SqliteDatabase } from "./database.ts";
import { LogFiles } from "./log-files.ts";

/** Bytes one `readLogChunks` call returns from a log file (callers loop until it is empty). */
const LOG_READ_PIECE_BYTES = 1024 * 1024;

type Raw = Record<string, unknown>;

const JOB_COLS: Record<keyof Omit<JobRow, "id">, string> = {
  runId: "run_id", name: "name", seq: "seq", spec: "spec", secrets: "secrets", fork: "fork", state: "state",
  reqKey: "req_key", attempt: "attempt", maxAttempts: "max_attempts", cancelMode: "cancel_mode",
  cancelDeadline: "cancel_deadline", logLimit: "log_limit", failure: "failure", steps: "steps",
  unschedulable: "unschedulable", createdAt: "created_at", finishedAt: "finished_at",
};
const JSON_JOB_FIELDS = new Set(["spec", "secrets", "failure", "steps"]);
const ATTEMPT_COLS: Record<keyof Omit<AttemptRow, "jobId" | "attempt">, string> = {
  state: "state", runnerId: "runner_id", leaseId: "lease_id", leaseHash: "lease_hash", expiresAt: "expires_at",
  startedAt: "started_at", finishedAt: "finished_at", reason: "reason", endedBy: "ended_by",
  logBytes: "log_bytes", logTruncated: "log_truncated",
};
const LIVE = "('leased','running','canceling')";

function toJob(r: Raw): JobRow {
  const row = {
    id: r.id as string, runId: r.run_id as string, name: r.name as string, seq: r.seq as number, fork: r.fork === 1,
    state: r.state as JobState, reqKey: r.req_key as string, attempt: r.attempt as number, maxAttempts: r.max_attempts as number,
    cancelMode: r.cancel_mode as JobRow["cancelMode"], cancelDeadline: r.cancel_deadline as number | null, logLimit: r.log_limit as number,
    failure: r.failure == null ? null : JSON.parse(r.failure as string), steps: r.steps == null ? null : JSON.parse(r.steps as string),
    unschedulable: r.unschedulable as string | null, createdAt: r.created_at as number, finishedAt: r.finished_at as number | null,
  } as JobRow;
  // The spec and secrets are parsed only when read: most state moves never look at them.
  lazyJson(row, "spec", r.spec as string);
  lazyJson(row, "secrets", r.secrets as string);
  return row;
}

function lazyJson(obj: object, key: string, text: string): void {
  let value: unknown;
  let parsed = false;
  Object.defineProperty(obj, key, {
    enumerable: true,
    configurable: true,
    get: () => {
      if (!parsed) {
        value = JSON.parse(text);
        parsed = true;
      }
      return value;
    },
    set: (v: unknown) => {
      value = v;
      parsed = true;
    },
  });
}

function toAttempt(r: Raw): AttemptRow {
  return {
    jobId: r.job_id as string, attempt: r.attempt as number, state: r.state as AttemptRow["state"], runnerId: r.runner_id as string | null,
    leaseId: r.lease_id as string | null, leaseHash: r.lease_hash as string | null, expiresAt: r.expires_at as number | null,
    startedAt: r.started_at as number | null, finishedAt: r.finished_at as number | null, reason: r.reason as string | null,
    endedBy: r.ended_by as string | null, logBytes: r.log_bytes as number, logTruncated: r.log_truncated === 1,
  };
}

function toArtifact(r: Raw): ArtifactRow {
  return {
    id: r.id as string, jobId: r.job_id as string, attempt: r.attempt as number, name: r.name as string, size: r.size as number,
    sha256: r.sha256 as string, mediaType: r.media_type as string, state: r.state as ArtifactRow["state"], createdAt: r.created_at as number,
  };
}

function sqlValue(key: string, v: unknown): unknown {
  if (v === undefined) return null;
  if (typeof v === "boolean") return v ? 1 : 0;
  if (JSON_JOB_FIELDS.has(key)) return v === null ? null : JSON.stringify(v);
  return v;
}

export class SqliteStateStore implements StateStore {
  private readonly sql: SqliteDatabase;
  private readonly logs: LogFiles;
  private readonly stmts = new Map<string, Statement>();
  private seq: number;
  /** Requirement sets that may have queued jobs (a superset; pruned lazily by queuedHeads). */
  private queuedKeys: Set<string> | null = null;

  constructor(file: string, durability: Durability) {
    this.sql = new SqliteDatabase(file, durability);
    this.logs = new LogFiles(join(dirname(file), "logs"), durability === "full");
    this.sql.beforeCommit = () => this.logs.syncWritten();
    this.seq = (this.sql.db.prepare("SELECT COALESCE(MAX(seq), 0) FROM jobs").pluck().get() as number) ?? 0;
  }

  get stats(): { commits: number; ops: number } {
    return this.sql.stats;
  }

  schemaVersion(): number {
    return this.sql.schemaVersion();
  }

  set onHookError(fn: (err: unknown) => void) {
    this.sql.onHookError = fn;
  }

  private st(text: string): Statement {
    let s = this.stmts.get(text);
    if (!s) {
      s = this.sql.db.prepare(text);
      this.stmts.set(text, s);
    }
    return s;
  }

  write<T>(fn: (hooks: TxHooks) => T, opts?: { durable?: boolean }): Promise<T> {
    return this.sql.write(fn, opts);
  }

  close(): void {
    this.sql.close();
    this.logs.close();
  }

  nextJobSeq(): number {
    return ++this.seq;
  }

  insertJob(j: JobRow): void {
    const keys = Object.keys(JOB_COLS) as Array<keyof typeof JOB_COLS>;
    const cols = ["id", ...keys.map((k) => JOB_COLS[k])];
    this.st(`INSERT INTO jobs(${cols.join(",")}) VALUES (${cols.map(() => "?").join(",")})`).run(j.id, ...keys.map((k) => sqlValue(k, j[k])));
    this.queuedKeys?.add(j.reqKey);
  }

  getJob(id: string): JobRow | undefined {
    const r = this.st("SELECT * FROM jobs WHERE id = ?").get(id) as Raw | undefined;
    return r ? toJob(r) : undefined;
  }

  updateJob(id: string, patch: Partial<Omit<JobRow, "id">>): void {
    const keys = (Object.keys(patch) as Array<keyof typeof JOB_COLS>).filter((k) => patch[k] !== undefined).sort();
    if (keys.length === 0) return;
    if (patch.state === "queued") this.queuedKeys = null;
    this.st(`UPDATE jobs SET ${keys.map((k) => `${JOB_COLS[k]} = ?`).join(", ")} WHERE id = ?`).run(...keys.map((k) => sqlValue(k, patch[k])), id);
  }

  listJobs(filter: { state?: JobState; limit: number }): JobRow[] {
    const rows = filter.state
      ? this.st("SELECT * FROM jobs WHERE state = ? ORDER BY seq DESC LIMIT ?").all(filter.state, filter.limit)
      : this.st("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?").all(filter.limit);
    return (rows as Raw[]).map(toJob);
  }

  queuedHeads(): Array<{ id: string; reqKey: string }> {
    // Distinct queued requirement sets are few; each head is one index probe, not a scan of the queue.
    if (this.queuedKeys === null) {
      this.queuedKeys = new Set(this.st("SELECT DISTINCT req_key FROM jobs WHERE state = 'queued'").pluck().all() as string[]);
    }
    const heads: Array<{ id: string; reqKey: string; seq: number }> = [];
    for (const key of this.queuedKeys) {
      const r = this.st("SELECT id, seq FROM jobs WHERE state = 'queued' AND req_key = ? ORDER BY seq LIMIT 1").get(key) as Raw | undefined;
      if (r) heads.push({ id: r.id as string, reqKey: key, seq: r.seq as number });
      else this.queuedKeys.delete(key);
    }
    return heads.sort((a, b) => a.seq - b.seq).map(({ id, reqKey }) => ({ id, reqKey }));
  }

  queuedJobs(): JobRow[] {
    return (this.st("SELECT * FROM jobs WHERE state = 'queued' ORDER BY seq").all() as Raw[]).map(toJob);
  }

  cancelOverdue(now: number): JobRow[] {
    return (this.st("SELECT * FROM jobs WHERE state = 'canceling' AND cancel_deadline <= ?").all(now) as Raw[]).map(toJob);
  }

  demandRows(): DemandRow[] {
    const rows = this.st(
      "SELECT req_key, state, unschedulable IS NOT NULL AS u, COUNT(*) AS n FROM jobs WHERE state IN ('queued','leased','running','canceling') GROUP BY req_key, state, u",
    ).all() as Raw[];
    return rows.map((r) => ({ reqKey: r.req_key as string, state: r.state as JobState, unschedulable: r.u === 1, count: r.n as number }));
  }

  countJobsByState(): Array<{ state: JobState; count: number }> {
    return (this.st("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").all() as Raw[]).map((r) => ({ state: r.state as JobState, count: r.n as number }));
  }

  insertAttempt(a: AttemptRow): void {
    const keys = Object.keys(ATTEMPT_COLS) as Array<keyof typeof ATTEMPT_COLS>;
    const cols = ["job_id", "attempt", ...keys.map((k) => ATTEMPT_COLS[k])];
    this.st(`INSERT INTO attempts(${cols.join(",")}) VALUES (${cols.map(() => "?").join(",")})`).run(a.jobId, a.attempt, ...keys.map((k) => sqlValue(k, a[k])));
  }

  getAttempt(jobId: string, attempt: number): AttemptRow | undefined {
    const r = this.st("SELECT * FROM attempts WHERE job_id = ? AND attempt = ?").get(jobId, attempt) as Raw | undefined;
    return r ? toAttempt(r) : undefined;
  }

  getAttemptByLeaseHash(hash: string): AttemptRow | undefined {
    const r = this.st("SELECT * FROM attempts WHERE lease_hash = ?").get(hash) as Raw | undefined;
    return r ? toAttempt(r) : undefined;
  }

  updateAttempt(jobId: string, attempt: number, patch: Partial<Omit<AttemptRow, "jobId" | "attempt">>): void {
    const keys = (Object.keys(patch) as Array<keyof typeof ATTEMPT_COLS>).filter((k) => patch[k] !== undefined).sort();
    if (keys.length === 0) return;
    this.st(`UPDATE attempts SET ${keys.map((k) => `${ATTEMPT_COLS[k]} = ?`).join(", ")} WHERE job_id = ? AND attempt = ?`).run(
      ...keys.map((k) => sqlValue(k, patch[k])), jobId, attempt,
    );
  }

  listAttempts(jobId: string): AttemptRow[] {
    return (this.st("SELECT * FROM attempts WHERE job_id = ? ORDER BY attempt").all(jobId) as Raw[]).map(toAttempt);
  }

  expiredAttempts(now: number): AttemptRow[] {
    return (this.st(`SELECT * FROM attempts WHERE state IN ${LIVE} AND expires_at <= ?`).all(now) as Raw[]).map(toAttempt);
  }

  extendLiveLeases(minExpiresAt: number): number {
    return this.st(`UPDATE attempts SET expires_at = ? WHERE state IN ${LIVE} AND expires_at < ?`).run(minExpiresAt, minExpiresAt).changes;
  }

  addTransition(jobId: string, t: TransitionRow): void {
    this.st("INSERT INTO transitions(job_id, attempt, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?, ?)").run(jobId, t.attempt, t.at, t.from, t.to, t.reason);
  }

  listTransitions(jobId: string): TransitionRow[] {
    const rows = this.st("SELECT * FROM transitions WHERE job_id = ? ORDER BY id").all(jobId) as Raw[];
    return rows.map((r) => ({ at: r.at as number, attempt: r.attempt as number | null, from: r.from_state as string, to: r.to_state as string, reason: r.reason as string }));
  }

  insertRunner(r: RunnerRow): void {
    this.st("INSERT INTO runners(id, name, version, capabilities, session_hash, session_expires_at, session_used, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)").run(
      r.id, r.name, r.version, JSON.stringify(r.capabilities), r.sessionHash, r.sessionExpiresAt, r.sessionUsed ? 1 : 0, r.createdAt,
    );
  }

  private toRunner(r: Raw | undefined): RunnerRow | undefined {
    if (!r) return undefined;
    return {
      id: r.id as string, name: r.name as string, version: r.version as string, capabilities: JSON.parse(r.capabilities as string),
      sessionHash: r.session_hash as string, sessionExpiresAt: r.session_expires_at as number, sessionUsed: r.session_used === 1, createdAt: r.created_at as number,
    };
  }

  getRunnerBySession(hash: string): RunnerRow | undefined {
    return this.toRunner(this.st("SELECT * FROM runners WHERE session_hash = ?").get(hash) as Raw | undefined);
  }

  getRunner(id: string): RunnerRow | undefined {
    return this.toRunner(this.st("SELECT * FROM runners WHERE id = ?").get(id) as Raw | undefined);
  }

  markSessionUsed(runnerId: string): void {
    this.st("UPDATE runners SET session_used = 1 WHERE id = ?").run(runnerId);
  }

  insertRegistration(r: RegistrationRow): void {
    this.st("INSERT INTO registrations(hash, labels, expires_at, used_at) VALUES (?, ?, ?, ?)").run(r.hash, JSON.stringify(r.labels), r.expiresAt, r.usedAt);
  }

  getRegistration(hash: string): RegistrationRow | undefined {
    const r = this.st("SELECT * FROM registrations WHERE hash = ?").get(hash) as Raw | undefined;
    return r ? { hash: r.hash as string, labels: JSON.parse(r.labels as string), expiresAt: r.expires_at as number, usedAt: r.used_at as number | null } : undefined;
  }

  markRegistrationUsed(hash: string, at: number): void {
    this.st("UPDATE registrations SET used_at = ? WHERE hash = ?").run(at, hash);
  }

  insertArtifact(a: ArtifactRow): void {
    this.st("INSERT INTO artifacts(id, job_id, attempt, name, size, sha256, media_type, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)").run(
      a.id, a.jobId, a.attempt, a.name, a.size, a.sha256, a.mediaType, a.state, a.createdAt,
    );
  }

  getArtifact(id: string): ArtifactRow | undefined {
    const r = this.st("SELECT * FROM artifacts WHERE id = ?").get(id) as Raw | undefined;
    return r ? toArtifact(r) : undefined;
  }

  findArtifact(jobId: string, attempt: number, name: string): ArtifactRow | undefined {
    const r = this.st("SELECT * FROM artifacts WHERE job_id = ? AND attempt = ? AND name = ?").get(jobId, attempt, name) as Raw | undefined;
    return r ? toArtifact(r) : undefined;
  }

  setArtifactCommitted(id: string): void {
    this.st("UPDATE artifacts SET state = 'committed' WHERE id = ?").run(id);
  }

  deleteArtifact(id: string): void {
    this.st("DELETE FROM artifacts WHERE id = ?").run(id);
  }

  listArtifacts(jobId: string, attempt: number): ArtifactRow[] {
    return (this.st("SELECT * FROM artifacts WHERE job_id = ? AND attempt = ? ORDER BY name").all(jobId, attempt) as Raw[]).map(toArtifact);
  }

  /** Log bytes go to a file per attempt (log-files.ts); a log an older server began in `log_chunks` stays there. */
  appendLogChunk(jobId: string, attempt: number, start: number, parts: readonly Buffer[]): void {
    if (start > 0 && !this.logs.exists(jobId, attempt) && this.st("SELECT 1 FROM log_chunks WHERE job_id = ? AND attempt = ? LIMIT 1").get(jobId, attempt)) {
      const data = Buffer.concat(parts);
      this.st("INSERT INTO log_chunks(job_id, attempt, start_off, end_off, data) VALUES (?, ?, ?, ?, ?)").run(jobId, attempt, start, start + data.length, data);
      return;
    }
    this.logs.write(jobId, attempt, start, parts);
  }

  readLogChunks(jobId: string, attempt: number, offset: number, limit: number): Array<{ start: number; data: Buffer }> {
    if (this.logs.exists(jobId, attempt)) {
      // The file may hold bytes past the committed end (see log-files.ts): read only up to it.
      const committed = (this.st("SELECT log_bytes FROM attempts WHERE job_id = ? AND attempt = ?").pluck().get(jobId, attempt) as number | undefined) ?? 0;
      const len = Math.min(LOG_READ_PIECE_BYTES, committed - offset);
      const data = len > 0 ? this.logs.read(jobId, attempt, offset, len) : null;
      return data && data.length > 0 ? [{ start: offset, data }] : [];
    }
    const rows = this.st("SELECT start_off, data FROM log_chunks WHERE job_id = ? AND attempt = ? AND end_off > ? ORDER BY start_off LIMIT ?").all(jobId, attempt, offset, limit) as Raw[];
    return rows.map((r) => ({ start: r.start_off as number, data: r.data as Buffer }));
  }

  getKv(key: string): string | undefined {
    return this.st("SELECT value FROM kv WHERE key = ?").pluck().get(key) as string | undefined;
  }

  setKv(key: string, value: string): void {
    this.st("INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(key, value);
  }
}
