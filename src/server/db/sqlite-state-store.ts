/** StateStore on SQLite: prepared statements cached once, rows mapped to engine types. */
import { dirname, join } from "node:path";
import type { Statement } from "better-sqlite3";
import type { JobState } from "../../protocol/schemas.ts";
import type { BlobRef, JobListFilter, StagedLogBytes, StateOps, StateStore, StateTx, TxHooks } from "../engine/state-store.ts";
import type { ArtifactRow, AttemptRow, DemandRow, JobRow, RegistrationRow, RunnerRow, TransitionRow } from "../engine/types.ts";
import type { Durability } from "../options.ts";
import { SecretBox } from "../secrets/secret-box.ts";
import { SqliteDatabase } from "./database.ts";
import { LogFiles } from "./log-files.ts";
import { SqliteGc } from "./sqlite-gc.ts";
import { defaults } from "../../config/defaults.ts";
import { partsLength } from "../engine/byte-parts.ts";
import {
  ATTEMPT_COLS, ATTEMPT_ROW_COLS, JOB_COLS, JOB_ROW_COLS, JOB_ROW_SEQ, LIVE, type Raw, sqlValue, storedSecrets, toArtifact, toAttemptValues, toJobValues, toRegistration, toRunner, toTransition,
} from "./rows.ts";

/** The reads that, outside a transaction, wait for commits not yet durable (SqliteDatabase.durable). */
const OUTSIDE_READS = [
  "getJob", "listJobs", "queuedReqKeys", "oldestQueued", "queuedJobs", "cancelOverdue", "demandRows", "countJobsByState",
  "getAttempt", "getAttemptByLeaseHash", "getLeasedAttempt", "listAttempts", "expiredAttempts", "listTransitions", "getRunnerBySession", "getRunner",
  "getRegistration", "getArtifact", "findArtifact", "listArtifacts", "readLogChunks", "getKv", "blobCollecting", "gcEpoch",
  "expiredJobIds", "blobMarks", "unarchivedLogs",
] as const satisfies ReadonlyArray<keyof StateOps>;

/** getLeasedAttempt's statement: the attempt's columns, then its job's (NULLs when the job is gone). */
const LEASED_ATTEMPT_SQL = `SELECT ${ATTEMPT_ROW_COLS.map((c) => `a.${c}`).join(", ")}, ${JOB_ROW_COLS.map((c) => `j.${c}`).join(", ")} FROM attempts a LEFT JOIN jobs j ON j.id = a.job_id WHERE a.lease_hash = ?`;

/** How an UPDATE of a row of these tables names it (the key's values follow the SET values). */
const ROW_KEY = { jobs: "id = ?", attempts: "job_id = ? AND attempt = ?" } as const;

/** The statement cached in `map` under `key`, prepared by `make` on first use. */
function cached(map: Map<string, Statement>, key: string, make: () => Statement): Statement {
  let s = map.get(key);
  if (!s) {
    s = make();
    map.set(key, s);
  }
  return s;
}

/** Bytes one `readLogChunks` call returns from a log file (callers loop until it is empty). */
const LOG_READ_PIECE_BYTES = 1024 * 1024;

export class SqliteStateStore implements StateStore {
  private readonly sql: SqliteDatabase;
  private readonly logs: LogFiles;
  private readonly stmts = new Map<string, Statement>();
  private readonly jobStmts = new Map<string, Statement>();
  private readonly attemptStmts = new Map<string, Statement>();
  /** UPDATE statements by the patch's columns (`updates`). */
  private readonly updateStmts = new Map<string, Statement>();
  /** Mutable state lives in this object, shared by the store and its transaction views (write()). */
  private readonly mem: { seq: number; queuedKeys: Set<string> | null } = { seq: 0, queuedKeys: null };

  private readonly box: SecretBox;
  private readonly gc: SqliteGc;
  /** What a transaction's view inherits from: the store, with the reads that do not wait (see OUTSIDE_READS). */
  private readonly txBase: SqliteStateStore;

  constructor(file: string, durability: Durability, box: SecretBox) {
    this.box = box;
    this.sql = new SqliteDatabase(file, durability);
    this.logs = new LogFiles(join(dirname(file), "logs"), durability === "full");
    this.sql.beforeCommit = () => this.logs.syncWritten();
    this.gc = new SqliteGc((text) => this.st(text), this.logs);
    this.mem.seq = (this.sql.db.prepare("SELECT COALESCE(MAX(seq), 0) FROM jobs").pluck().get() as number) ?? 0;
    // Outside a transaction a read first waits for the commits not yet durable (full durability
    // syncs after the commit, off the event loop): nothing unacknowledged is ever read. A
    // transaction reads directly: it is acknowledged only after a sync that covers what it read.
    const direct: Record<string, unknown> = {};
    for (const name of OUTSIDE_READS) {
      const read = (SqliteStateStore.prototype as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>)[name] as (...args: unknown[]) => Promise<unknown>;
      direct[name] = read;
      (this as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
        const wait = this.sql.durable();
        return wait ? wait.then(() => read.apply(this, args)) : read.apply(this, args);
      };
    }
    this.txBase = Object.assign(Object.create(this) as SqliteStateStore, direct);
  }

  get stats(): { commits: number; ops: number } {
    return this.sql.stats;
  }

  async schemaVersion(): Promise<number> {
    return this.sql.schemaVersion();
  }

  set onHookError(fn: (err: unknown) => void) {
    this.sql.onHookError = fn;
  }

  private st(text: string): Statement {
    return cached(this.stmts, text, () => this.sql.db.prepare(text));
  }

  /** `SELECT <job columns> FROM jobs <rest>`, rows as arrays in JOB_ROW_COLS order (cached by `rest`: no SQL text built per call). */
  private jobs(rest: string): Statement {
    return cached(this.jobStmts, rest, () => this.arrays(`SELECT ${JOB_ROW_COLS.join(", ")} FROM jobs ${rest}`));
  }

  /** `SELECT <attempt columns> FROM attempts <rest>`, rows as arrays in ATTEMPT_ROW_COLS order (cached as `jobs`). */
  private attempts(rest: string): Statement {
    return cached(this.attemptStmts, rest, () => this.arrays(`SELECT ${ATTEMPT_ROW_COLS.join(", ")} FROM attempts ${rest}`));
  }

  /**
   * `UPDATE table SET <cols of keys> = ? … WHERE <its key>`, cached by table and keys (sorted):
   * the SQL text is built once per set of columns, not on every update (two per protocol request).
   */
  private updates<K extends string>(table: keyof typeof ROW_KEY, cols: Record<K, string>, keys: readonly K[]): Statement {
    return cached(this.updateStmts, `${table} ${keys.join(" ")}`, () => this.sql.db.prepare(`UPDATE ${table} SET ${keys.map((k) => `${cols[k]} = ?`).join(", ")} WHERE ${ROW_KEY[table]}`));
  }

  /** A cached statement whose rows are arrays (`.raw()`); `text` names its columns. */
  private arrays(text: string): Statement {
    return cached(this.stmts, text, () => this.sql.db.prepare(text).raw());
  }

  write<T>(fn: (tx: StateTx) => Promise<T>, opts?: { durable?: boolean }): Promise<T> {
    // One connection, one transaction at a time: the transaction's reads are the store's own
    // (a view of it with the hooks added; it must never assign fields, see `mem`).
    return this.sql.write((hooks) => fn(Object.assign(Object.create(this.txBase) as SqliteStateStore, hooks)), opts);
  }

  readonly shared = false;

  async subscribe(): Promise<() => Promise<void>> {
    return async () => {};
  }

  async leadSweeper(): Promise<boolean> {
    return true;
  }

  async close(): Promise<void> {
    await this.sql.close();
    this.logs.close();
  }

  async nextJobSeq(): Promise<number> {
    return ++this.mem.seq;
  }

  async insertJob(j: JobRow): Promise<void> {
    const keys = Object.keys(JOB_COLS) as Array<keyof typeof JOB_COLS>;
    const cols = ["id", ...keys.map((k) => JOB_COLS[k])];
    const value = (k: keyof typeof JOB_COLS) => (k === "secrets" ? storedSecrets(this.box, j.id, j.secrets) : sqlValue(k, j[k]));
    this.st(`INSERT INTO jobs(${cols.join(",")}) VALUES (${cols.map(() => "?").join(",")})`).run(j.id, ...keys.map(value));
    this.mem.queuedKeys?.add(j.reqKey);
  }

  async getJob(id: string): Promise<JobRow | undefined> {
    const r = this.jobs("WHERE id = ?").get(id) as unknown[] | undefined;
    return r ? toJobValues(r, this.box) : undefined;
  }

  async updateJob(id: string, patch: Partial<Omit<JobRow, "id">>): Promise<void> {
    const keys = (Object.keys(patch) as Array<keyof typeof JOB_COLS>).filter((k) => patch[k] !== undefined).sort();
    if (keys.length === 0) return;
    if (patch.state === "queued") this.mem.queuedKeys = null;
    const value = (k: keyof typeof JOB_COLS) => (k === "secrets" ? storedSecrets(this.box, id, patch.secrets ?? {}) : sqlValue(k, patch[k]));
    this.updates("jobs", JOB_COLS, keys).run(...keys.map(value), id);
  }

  async listJobs(filter: JobListFilter): Promise<JobRow[]> {
    const where: string[] = [];
    const args: Array<string | number> = [];
    const add = (cond: string, v: string | number | undefined) => {
      if (v === undefined) return;
      where.push(cond);
      args.push(v);
    };
    add("state = ?", filter.state);
    add("instr(name, ?) > 0", filter.name);
    add("EXISTS (SELECT 1 FROM json_each(spec, '$.runsOn.labels') WHERE value = ?)", filter.label);
    add("seq < ?", filter.beforeSeq);
    const cond = where.length > 0 ? `WHERE ${where.join(" AND ")} ` : "";
    return (this.jobs(`${cond}ORDER BY seq DESC LIMIT ?`).all(...args, filter.limit) as unknown[][]).map((r) => toJobValues(r, this.box));
  }

  async queuedReqKeys(): Promise<string[]> {
    if (this.mem.queuedKeys === null) {
      this.mem.queuedKeys = new Set(this.st("SELECT DISTINCT req_key FROM jobs WHERE state = 'queued'").pluck().all() as string[]);
    }
    return [...this.mem.queuedKeys];
  }

  async oldestQueued(reqKeys: readonly string[]): Promise<JobRow | undefined> {
    // Distinct queued requirement sets are few; each head is one index probe, not a scan of the queue.
    let best: unknown[] | undefined;
    for (const key of reqKeys) {
      const r = this.jobs("WHERE state = 'queued' AND req_key = ? ORDER BY seq LIMIT 1").get(key) as unknown[] | undefined;
      if (!r) this.mem.queuedKeys?.delete(key);
      else if (!best || (r[JOB_ROW_SEQ] as number) < (best[JOB_ROW_SEQ] as number)) best = r;
    }
    return best ? toJobValues(best, this.box) : undefined;
  }

  async queuedJobs(): Promise<JobRow[]> {
    return (this.jobs("WHERE state = 'queued' ORDER BY seq").all() as unknown[][]).map((r) => toJobValues(r, this.box));
  }

  async cancelOverdue(now: number): Promise<JobRow[]> {
    return (this.jobs("WHERE state = 'canceling' AND cancel_deadline <= ?").all(now) as unknown[][]).map((r) => toJobValues(r, this.box));
  }

  async demandRows(): Promise<DemandRow[]> {
    const rows = this.st(
      "SELECT req_key, state, unschedulable IS NOT NULL AS u, COUNT(*) AS n FROM jobs WHERE state IN ('queued','leased','running','canceling') GROUP BY req_key, state, u",
    ).all() as Raw[];
    return rows.map((r) => ({ reqKey: r.req_key as string, state: r.state as JobState, unschedulable: r.u === 1, count: r.n as number }));
  }

  async countJobsByState(): Promise<Array<{ state: JobState; count: number }>> {
    return (this.st("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").all() as Raw[]).map((r) => ({ state: r.state as JobState, count: r.n as number }));
  }

  async insertAttempt(a: AttemptRow): Promise<void> {
    const keys = Object.keys(ATTEMPT_COLS) as Array<keyof typeof ATTEMPT_COLS>;
    const cols = ["job_id", "attempt", ...keys.map((k) => ATTEMPT_COLS[k])];
    this.st(`INSERT INTO attempts(${cols.join(",")}) VALUES (${cols.map(() => "?").join(",")})`).run(a.jobId, a.attempt, ...keys.map((k) => sqlValue(k, a[k])));
  }

  async getAttempt(jobId: string, attempt: number): Promise<AttemptRow | undefined> {
    const r = this.attempts("WHERE job_id = ? AND attempt = ?").get(jobId, attempt) as unknown[] | undefined;
    return r ? toAttemptValues(r) : undefined;
  }

  async getAttemptByLeaseHash(hash: string): Promise<AttemptRow | undefined> {
    const r = this.attempts("WHERE lease_hash = ?").get(hash) as unknown[] | undefined;
    return r ? toAttemptValues(r) : undefined;
  }

  async getLeasedAttempt(hash: string): Promise<{ a: AttemptRow; job: JobRow | undefined } | undefined> {
    const r = this.arrays(LEASED_ATTEMPT_SQL).get(hash) as unknown[] | undefined;
    if (!r) return undefined;
    const job = r[ATTEMPT_ROW_COLS.length] == null ? undefined : toJobValues(r.slice(ATTEMPT_ROW_COLS.length), this.box);
    return { a: toAttemptValues(r.slice(0, ATTEMPT_ROW_COLS.length)), job };
  }

  async updateAttempt(jobId: string, attempt: number, patch: Partial<Omit<AttemptRow, "jobId" | "attempt">>): Promise<void> {
    const keys = (Object.keys(patch) as Array<keyof typeof ATTEMPT_COLS>).filter((k) => patch[k] !== undefined).sort();
    if (keys.length === 0) return;
    this.updates("attempts", ATTEMPT_COLS, keys).run(...keys.map((k) => sqlValue(k, patch[k])), jobId, attempt);
  }

  async listAttempts(jobId: string): Promise<AttemptRow[]> {
    return (this.attempts("WHERE job_id = ? ORDER BY attempt").all(jobId) as unknown[][]).map(toAttemptValues);
  }

  async expiredAttempts(now: number): Promise<AttemptRow[]> {
    return (this.attempts(`WHERE state IN ${LIVE} AND expires_at <= ?`).all(now) as unknown[][]).map(toAttemptValues);
  }

  async extendLiveLeases(minExpiresAt: number): Promise<number> {
    return this.st(`UPDATE attempts SET expires_at = ? WHERE state IN ${LIVE} AND expires_at < ?`).run(minExpiresAt, minExpiresAt).changes;
  }

  async addTransition(jobId: string, t: TransitionRow): Promise<void> {
    this.st("INSERT INTO transitions(job_id, attempt, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?, ?)").run(jobId, t.attempt, t.at, t.from, t.to, t.reason);
  }

  async listTransitions(jobId: string): Promise<TransitionRow[]> {
    const rows = this.st("SELECT * FROM transitions WHERE job_id = ? ORDER BY id").all(jobId) as Raw[];
    return rows.map(toTransition);
  }

  async insertRunner(r: RunnerRow): Promise<void> {
    this.st("INSERT INTO runners(id, name, version, capabilities, session_hash, session_expires_at, session_used, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)").run(
      r.id, r.name, r.version, JSON.stringify(r.capabilities), r.sessionHash, r.sessionExpiresAt, r.sessionUsed ? 1 : 0, r.createdAt,
    );
  }

  private toRunner(r: Raw | undefined): RunnerRow | undefined {
    return r ? toRunner(r) : undefined;
  }

  async getRunnerBySession(hash: string): Promise<RunnerRow | undefined> {
    return this.toRunner(this.st("SELECT * FROM runners WHERE session_hash = ?").get(hash) as Raw | undefined);
  }

  async getRunner(id: string): Promise<RunnerRow | undefined> {
    return this.toRunner(this.st("SELECT * FROM runners WHERE id = ?").get(id) as Raw | undefined);
  }

  async markSessionUsed(runnerId: string): Promise<void> {
    this.st("UPDATE runners SET session_used = 1 WHERE id = ?").run(runnerId);
  }

  async insertRegistration(r: RegistrationRow): Promise<void> {
    this.st("INSERT INTO registrations(hash, labels, expires_at, used_at) VALUES (?, ?, ?, ?)").run(r.hash, JSON.stringify(r.labels), r.expiresAt, r.usedAt);
  }

  async getRegistration(hash: string): Promise<RegistrationRow | undefined> {
    const r = this.st("SELECT * FROM registrations WHERE hash = ?").get(hash) as Raw | undefined;
    return r ? toRegistration(r) : undefined;
  }

  async markRegistrationUsed(hash: string, at: number): Promise<void> {
    this.st("UPDATE registrations SET used_at = ? WHERE hash = ?").run(at, hash);
  }

  async insertArtifact(a: ArtifactRow): Promise<void> {
    this.st("INSERT INTO artifacts(id, job_id, attempt, name, size, sha256, media_type, path, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)").run(
      a.id, a.jobId, a.attempt, a.name, a.size, a.sha256, a.mediaType, a.path, a.state, a.createdAt,
    );
  }

  async getArtifact(id: string): Promise<ArtifactRow | undefined> {
    const r = this.st("SELECT * FROM artifacts WHERE id = ?").get(id) as Raw | undefined;
    return r ? toArtifact(r) : undefined;
  }

  async findArtifact(jobId: string, attempt: number, name: string): Promise<ArtifactRow | undefined> {
    const r = this.st("SELECT * FROM artifacts WHERE job_id = ? AND attempt = ? AND name = ?").get(jobId, attempt, name) as Raw | undefined;
    return r ? toArtifact(r) : undefined;
  }

  async setArtifactCommitted(id: string): Promise<void> {
    this.st("UPDATE artifacts SET state = 'committed' WHERE id = ?").run(id);
  }

  async deleteArtifact(id: string): Promise<void> {
    this.st("DELETE FROM artifacts WHERE id = ?").run(id);
  }

  async listArtifacts(jobId: string, attempt: number): Promise<ArtifactRow[]> {
    return (this.st("SELECT * FROM artifacts WHERE job_id = ? AND attempt = ? ORDER BY name").all(jobId, attempt) as Raw[]).map(toArtifact);
  }

  /**
   * A log starts as `log_chunks` rows (committed, and fsynced, with the batch: no file to create
   * or sync); an append that takes it past `logInlineMaxBytes` moves it to a file per attempt
   * (log-files.ts), rows deleted in the same transaction. Rows, while there are any, are the log;
   * a log an older server began in rows past that size stays in rows.
   */
  async appendLogChunk(jobId: string, attempt: number, start: number, parts: readonly Buffer[], staged?: StagedLogBytes | null): Promise<void> {
    const end = start + partsLength(parts);
    const inRows = start > 0 && this.st("SELECT 1 FROM log_chunks WHERE job_id = ? AND attempt = ? LIMIT 1").get(jobId, attempt) !== undefined;
    if (end <= defaults.logInlineMaxBytes ? inRows || start === 0 : inRows && start > defaults.logInlineMaxBytes) {
      const data = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
      this.st("INSERT INTO log_chunks(job_id, attempt, start_off, end_off, data) VALUES (?, ?, ?, ?, ?)").run(jobId, attempt, start, end, data);
      return;
    }
    if (inRows) {
      // Outgrows the rows: they go to the file first (fdatasynced before this commit like the rest).
      const rows = this.st("SELECT start_off, data FROM log_chunks WHERE job_id = ? AND attempt = ? ORDER BY start_off").all(jobId, attempt) as Raw[];
      for (const r of rows) this.logs.write(jobId, attempt, r.start_off as number, [r.data as Buffer]);
      this.st("DELETE FROM log_chunks WHERE job_id = ? AND attempt = ?").run(jobId, attempt);
    }
    // Already in the file, and synced, before this transaction (stageLogBytes).
    if (staged && staged.start <= start && end <= staged.end) return;
    this.logs.write(jobId, attempt, start, parts);
  }

  /** See StateStore: the read a transaction would make, not held back by the running WAL sync. */
  async peekAttemptByLeaseHash(hash: string): Promise<AttemptRow | undefined> {
    return this.txBase.getAttemptByLeaseHash(hash);
  }

  /** Only a log already in its file (no rows: it never goes back to rows), see StateStore. */
  async stageLogBytes(jobId: string, attempt: number, start: number, parts: readonly Buffer[]): Promise<StagedLogBytes | null> {
    if (start <= defaults.logInlineMaxBytes) return null;
    if (this.st("SELECT 1 FROM log_chunks WHERE job_id = ? AND attempt = ? LIMIT 1").get(jobId, attempt) !== undefined) return null;
    return (await this.logs.stage(jobId, attempt, start, parts)) ? { start, end: start + partsLength(parts) } : null;
  }

  async readLogChunks(jobId: string, attempt: number, offset: number, limit: number): Promise<Array<{ start: number; data: Buffer }>> {
    const rows = this.st("SELECT start_off, data FROM log_chunks WHERE job_id = ? AND attempt = ? AND end_off > ? ORDER BY start_off LIMIT ?").all(jobId, attempt, offset, limit) as Raw[];
    if (rows.length > 0) return rows.map((r) => ({ start: r.start_off as number, data: r.data as Buffer }));
    // No rows from `offset` on: the log is a file, or it ends before `offset`. A file may hold
    // bytes past the committed end (see log-files.ts; a move to a file that rolled back): read only up to it.
    const committed = (this.st("SELECT log_bytes FROM attempts WHERE job_id = ? AND attempt = ?").pluck().get(jobId, attempt) as number | undefined) ?? 0;
    const len = Math.min(LOG_READ_PIECE_BYTES, committed - offset);
    const data = len > 0 ? this.logs.read(jobId, attempt, offset, len) : null;
    return data && data.length > 0 ? [{ start: offset, data }] : [];
  }

  /** Every stored value must open under the key file (see StateStore); runs as one transaction. */
  async sealStoredSecrets(terminal: ReadonlySet<string>): Promise<{ resealed: number; deleted: number }> {
    const counts = { resealed: 0, deleted: 0 };
    this.sql.db.transaction(() => {
      const rows = this.sql.db.prepare("SELECT id, state, secrets FROM jobs WHERE secrets <> '{}'").all() as Raw[];
      for (const r of rows) {
        const id = r.id as string;
        const text = r.secrets as string;
        const plain = SecretBox.isSealed(text) ? this.box.open(text, id) : text;
        if (terminal.has(r.state as string)) {
          this.st("UPDATE jobs SET secrets = '{}' WHERE id = ?").run(id);
          counts.deleted++;
        } else if (SecretBox.kidOf(text) !== this.box.activeKid) {
          this.st("UPDATE jobs SET secrets = ? WHERE id = ?").run(storedSecrets(this.box, id, JSON.parse(plain) as Record<string, string>), id);
          counts.resealed++;
        }
      }
    })();
    // Old plain or old-key values must not linger in free pages or the WAL.
    if (counts.resealed + counts.deleted > 0) this.sql.db.pragma("wal_checkpoint(TRUNCATE)");
    return counts;
  }

  async getKv(key: string): Promise<string | undefined> {
    return this.st("SELECT value FROM kv WHERE key = ?").pluck().get(key) as string | undefined;
  }

  async setKv(key: string, value: string): Promise<void> {
    this.st("INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(key, value);
  }

  async blobCollecting(sha256: string): Promise<boolean> {
    return this.gc.blobCollecting(sha256);
  }

  async gcEpoch(): Promise<number> {
    return this.gc.gcEpoch();
  }

  async expiredJobIds(finishedBefore: number, limit: number): Promise<string[]> {
    return this.gc.expiredJobIds(finishedBefore, limit);
  }

  /** Only inside `write` (its log files are removed after the commit). */
  async deleteJobs(ids: readonly string[], finishedBefore: number): Promise<{ jobs: number; logBytes: number }> {
    return this.gc.deleteJobs(this as unknown as TxHooks, ids, finishedBefore);
  }

  async deleteExpiredRegistrations(now: number): Promise<number> {
    return this.gc.deleteExpiredRegistrations(now);
  }

  async deleteDeadRunners(now: number): Promise<number> {
    return this.gc.deleteDeadRunners(now);
  }

  async markUnreferencedBlobs(candidates: readonly BlobRef[], now: number): Promise<BlobRef[]> {
    return this.gc.markUnreferencedBlobs(candidates, now);
  }

  async blobMarks(): Promise<BlobRef[]> {
    return this.gc.blobMarks();
  }

  async clearBlobMarks(sha256s: readonly string[]): Promise<void> {
    this.gc.clearBlobMarks(sha256s);
  }

  async unarchivedLogs(endedBefore: number, limit: number): Promise<Array<{ jobId: string; attempt: number }>> {
    return this.gc.unarchivedLogs(endedBefore, limit);
  }

  /** Only inside `write` (the log file is removed after the commit). */
  async setLogArchived(jobId: string, attempt: number, sha256: string): Promise<void> {
    this.gc.setLogArchived(this as unknown as TxHooks, jobId, attempt, sha256);
  }
}
