/**
 * The state's rows on PostgreSQL, over a pool (reads outside transactions: no locks) or over one
 * transaction (`locking`): then the job row is locked (FOR UPDATE) before its job, attempts,
 * artifacts or log are read, runner and registration rows lock themselves, and queue heads are
 * claimed with SKIP LOCKED. Jobs are locked in id order where a transaction takes several
 * (the sweep); other transactions take one job and wait for nothing while holding a runner.
 */
import type { PendingQuery, Row, Sql, TransactionSql } from "postgres";
import type { JobState } from "../../../protocol/schemas.ts";
import type { BlobRef, JobListFilter, StateOps } from "../../engine/state-store.ts";
import type { ArtifactRow, AttemptRow, DemandRow, JobRow, RegistrationRow, RunnerRow, TransitionRow } from "../../engine/types.ts";
import type { SecretBox } from "../../secrets/secret-box.ts";
import {
  ATTEMPT_COLS, JOB_COLS, type Raw, sqlValue, storedSecrets, toArtifact, toAttempt, toJob, toRegistration, toRunner, toTransition,
} from "../rows.ts";
import { PgGc } from "./pg-gc.ts";

const LIVE_STATES = ["leased", "running", "canceling"];
/** Transition rows per INSERT (`flush`). */
const TRANSITIONS_PER_INSERT = 1000;

/** `postgres` values a row field may carry (what sqlValue gives). */
type Val = string | number | null;

export class PgOps implements StateOps {
  /**
   * Jobs this transaction holds FOR UPDATE, with the row as read under the lock until this
   * transaction writes it (null then): no one else can change a held row, so `getJob` answers
   * from here without a round trip.
   */
  private readonly locked = new Map<string, Raw | null>();
  /** Writes of this transaction sent but not yet answered (see `put`). */
  private readonly pending: Array<Promise<unknown>> = [];
  /** Transition rows of this transaction not sent yet: one INSERT takes them all (`flush`). */
  private readonly transitions: Array<Record<string, Val>> = [];
  private readonly gc: PgGc;

  constructor(
    protected readonly q: Sql | TransactionSql,
    protected readonly box: SecretBox,
    private readonly locking: boolean,
  ) {
    this.gc = new PgGc(q, locking);
  }

  /** Locks the jobs (in id order) unless this is no transaction or already holds them. */
  private async lockJobs(ids: readonly string[]): Promise<void> {
    if (!this.locking) return;
    const want = [...new Set(ids)].filter((id) => !this.locked.has(id)).sort();
    if (want.length === 0) return;
    // Sent now (execute), not on the await's later turn: readLocked queues its read behind it.
    const rows = await this.q`SELECT * FROM jobs WHERE id = ANY(${want}) ORDER BY id FOR UPDATE`.execute();
    for (const id of want) this.locked.set(id, null);
    for (const r of rows) this.locked.set(r.id as string, r);
  }

  /**
   * A write. In a transaction it is sent without waiting for its answer: the connection runs
   * statements in order, so later reads see it, and writes sent in one turn share one packet.
   * `settle()` waits for every answer; a failed write fails the transaction.
   */
  protected async put(q: PendingQuery<Row[]>): Promise<void> {
    if (!this.locking) {
      await q;
      return;
    }
    const p = q.execute().then(() => undefined);
    p.catch(() => undefined); // awaited in settle(); this only keeps it from counting as unhandled meanwhile
    this.pending.push(p);
  }

  /**
   * Waits for every write sent in this transaction; throws the first failure. The store settles
   * before COMMIT: a write the client rejected without sending it aborted nothing on the server.
   */
  async settle(): Promise<void> {
    this.flush();
    await Promise.all(this.pending.splice(0));
  }

  /** Sends the rows buffered for one statement (transitions); the store calls it before COMMIT. */
  flush(): void {
    while (this.transitions.length > 0) {
      // A statement takes at most 65,535 parameters (6 a row): a sweep over many jobs sends several.
      const rows = this.transitions.splice(0, TRANSITIONS_PER_INSERT);
      void this.put(this.q`INSERT INTO transitions ${this.q(rows, "job_id", "attempt", "at", "from_state", "to_state", "reason")}`);
    }
  }

  private jobs(rows: readonly Raw[]): JobRow[] {
    return rows.map((r) => toJob(r, this.box));
  }

  async nextJobSeq(): Promise<number> {
    const [r] = await this.q`SELECT nextval('job_seq') AS n`;
    return Number(r?.n);
  }

  async insertJob(j: JobRow): Promise<void> {
    const row: Record<string, Val> = { id: j.id };
    for (const k of Object.keys(JOB_COLS) as Array<keyof typeof JOB_COLS>) {
      row[JOB_COLS[k]] = (k === "secrets" ? storedSecrets(this.box, j.id, j.secrets) : sqlValue(k, j[k])) as Val;
    }
    await this.put(this.q`INSERT INTO jobs ${this.q(row)}`);
    this.locked.set(j.id, null);
  }

  async getJob(id: string): Promise<JobRow | undefined> {
    if (!this.locking) return this.jobs(await this.q`SELECT * FROM jobs WHERE id = ${id}`)[0];
    const held = this.locked.get(id);
    if (held) return toJob(held, this.box);
    const [r] = await this.q`SELECT * FROM jobs WHERE id = ${id} FOR UPDATE`;
    return r ? this.lockedJob(r) : undefined;
  }

  async updateJob(id: string, patch: Partial<Omit<JobRow, "id">>): Promise<void> {
    const set: Record<string, Val> = {};
    for (const k of Object.keys(patch) as Array<keyof typeof JOB_COLS>) {
      if (patch[k] === undefined) continue;
      set[JOB_COLS[k]] = (k === "secrets" ? storedSecrets(this.box, id, patch.secrets ?? {}) : sqlValue(k, patch[k])) as Val;
    }
    if (Object.keys(set).length === 0) return;
    if (this.locked.has(id)) this.locked.set(id, null);
    await this.put(this.q`UPDATE jobs SET ${this.q(set)} WHERE id = ${id}`);
  }

  async listJobs(f: JobListFilter): Promise<JobRow[]> {
    const q = this.q;
    const rows = await q`SELECT * FROM jobs WHERE true
      ${f.state === undefined ? q`` : q`AND state = ${f.state}`}
      ${f.name === undefined ? q`` : q`AND strpos(name, ${f.name}) > 0`}
      ${f.label === undefined ? q`` : q`AND (spec::jsonb -> 'runsOn' -> 'labels') ? ${f.label}`}
      ${f.beforeSeq === undefined ? q`` : q`AND seq < ${f.beforeSeq}`}
      ORDER BY seq DESC LIMIT ${f.limit}`;
    return this.jobs(rows);
  }

  async queuedReqKeys(): Promise<string[]> {
    // A skip scan of jobs_queue: one index probe per distinct key, not a walk over the queue.
    const rows = await this.q`WITH RECURSIVE k AS (
        (SELECT req_key FROM jobs WHERE state = 'queued' ORDER BY req_key LIMIT 1)
        UNION ALL
        SELECT (SELECT req_key FROM jobs WHERE state = 'queued' AND req_key > k.req_key ORDER BY req_key LIMIT 1) FROM k WHERE k.req_key IS NOT NULL
      ) SELECT req_key FROM k WHERE req_key IS NOT NULL`;
    return rows.map((r) => r.req_key as string);
  }

  async oldestQueued(reqKeys: readonly string[]): Promise<JobRow | undefined> {
    if (reqKeys.length === 0) return undefined;
    const keys = [...reqKeys];
    // The head of each key (an index probe each), oldest first; without locks yet.
    if (!this.locking) {
      const heads = await this.q`SELECT j.id FROM unnest(${keys}::text[]) AS k(key),
        LATERAL (SELECT id, seq FROM jobs WHERE state = 'queued' AND req_key = k.key ORDER BY seq LIMIT 1) AS j ORDER BY j.seq`;
      return heads[0] ? this.getJob(heads[0].id as string) : undefined;
    }
    // One key (the usual case): its queue in seq order on the index, the first row no one holds.
    const [key] = keys;
    if (keys.length === 1 && key !== undefined) {
      const [r] = await this.q`SELECT * FROM jobs WHERE state = 'queued' AND req_key = ${key} ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED`;
      return r ? this.lockedJob(r) : undefined;
    }
    // The oldest head of the keys (an index probe each) that no one holds, in one statement.
    const [head] = await this.q`SELECT * FROM jobs WHERE state = 'queued' AND id IN (SELECT j.id FROM unnest(${keys}::text[]) AS k(key),
        LATERAL (SELECT id FROM jobs WHERE state = 'queued' AND req_key = k.key ORDER BY seq LIMIT 1) AS j)
      ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED`;
    if (head) return this.lockedJob(head);
    // Every head is being claimed by another transaction (or none is left): the next queued job no one holds.
    const [r] = await this.q`SELECT * FROM jobs WHERE state = 'queued' AND req_key = ANY(${keys}) ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED`;
    return r ? this.lockedJob(r) : undefined;
  }

  private lockedJob(r: Raw): JobRow {
    this.locked.set(r.id as string, r);
    return toJob(r, this.box);
  }

  async queuedJobs(): Promise<JobRow[]> {
    return this.jobs(await this.q`SELECT * FROM jobs WHERE state = 'queued' ORDER BY seq`);
  }

  async cancelOverdue(now: number): Promise<JobRow[]> {
    const find = () => this.q`SELECT * FROM jobs WHERE state = 'canceling' AND cancel_deadline <= ${now} ORDER BY id`;
    const first = await find();
    if (!this.locking || first.length === 0) return this.jobs(first);
    return this.jobs(await this.readLocked(first.map((r) => r.id as string), find()));
  }

  async demandRows(): Promise<DemandRow[]> {
    const rows = await this.q`SELECT req_key, state, (unschedulable IS NOT NULL)::int AS u, COUNT(*)::int AS n FROM jobs
      WHERE state IN ('queued','leased','running','canceling') GROUP BY req_key, state, u`;
    return rows.map((r) => ({ reqKey: r.req_key as string, state: r.state as JobState, unschedulable: r.u === 1, count: r.n as number }));
  }

  async countJobsByState(): Promise<Array<{ state: JobState; count: number }>> {
    const rows = await this.q`SELECT state, COUNT(*)::int AS n FROM jobs GROUP BY state`;
    return rows.map((r) => ({ state: r.state as JobState, count: r.n as number }));
  }

  async insertAttempt(a: AttemptRow): Promise<void> {
    const row: Record<string, Val> = { job_id: a.jobId, attempt: a.attempt };
    for (const k of Object.keys(ATTEMPT_COLS) as Array<keyof typeof ATTEMPT_COLS>) row[ATTEMPT_COLS[k]] = sqlValue(k, a[k]) as Val;
    await this.put(this.q`INSERT INTO attempts ${this.q(row)}`);
  }

  /**
   * `read`, sent right behind the lock of `ids` without waiting for it: the connection runs them
   * in order, so it reads what the lock waited for, in one round trip instead of two.
   */
  private async readLocked(ids: readonly string[], read: PendingQuery<Row[]>): Promise<readonly Row[]> {
    const [, rows] = await Promise.all([this.lockJobs(ids), read.execute()]);
    return rows;
  }

  async getAttempt(jobId: string, attempt: number): Promise<AttemptRow | undefined> {
    const [r] = await this.readLocked([jobId], this.q`SELECT * FROM attempts WHERE job_id = ${jobId} AND attempt = ${attempt}`);
    return r ? toAttempt(r) : undefined;
  }

  async getAttemptByLeaseHash(hash: string): Promise<AttemptRow | undefined> {
    if (!this.locking) {
      const [r] = await this.q`SELECT * FROM attempts WHERE lease_hash = ${hash}`;
      return r ? toAttempt(r) : undefined;
    }
    // The hash names one attempt, of one job, for good: that job is locked and the attempt read
    // by the next statement, once the lock is held; both sent at once, one round trip.
    const [jobs, [r]] = await Promise.all([
      this.q`SELECT * FROM jobs WHERE id = (SELECT job_id FROM attempts WHERE lease_hash = ${hash}) FOR UPDATE`.execute(),
      this.q`SELECT * FROM attempts WHERE lease_hash = ${hash}`.execute(),
    ]);
    if (!r) return undefined;
    const jobId = r.job_id as string;
    if (!this.locked.has(jobId)) this.locked.set(jobId, jobs[0] ?? null);
    return toAttempt(r);
  }

  async getLeasedAttempt(hash: string): Promise<{ a: AttemptRow; job: JobRow | undefined } | undefined> {
    // Two reads, as before: the job's row lock (in a transaction) is taken by its own statement.
    const a = await this.getAttemptByLeaseHash(hash);
    return a ? { a, job: await this.getJob(a.jobId) } : undefined;
  }

  async updateAttempt(jobId: string, attempt: number, patch: Partial<Omit<AttemptRow, "jobId" | "attempt">>): Promise<void> {
    const set: Record<string, Val> = {};
    for (const k of Object.keys(patch) as Array<keyof typeof ATTEMPT_COLS>) {
      if (patch[k] !== undefined) set[ATTEMPT_COLS[k]] = sqlValue(k, patch[k]) as Val;
    }
    if (Object.keys(set).length > 0) await this.put(this.q`UPDATE attempts SET ${this.q(set)} WHERE job_id = ${jobId} AND attempt = ${attempt}`);
  }

  async listAttempts(jobId: string): Promise<AttemptRow[]> {
    return (await this.q`SELECT * FROM attempts WHERE job_id = ${jobId} ORDER BY attempt`).map(toAttempt);
  }

  async expiredAttempts(now: number): Promise<AttemptRow[]> {
    const find = () => this.q`SELECT * FROM attempts WHERE state IN ${this.q(LIVE_STATES)} AND expires_at <= ${now} ORDER BY job_id, attempt`;
    const first = await find();
    if (!this.locking || first.length === 0) return first.map(toAttempt);
    // A complete may commit while we wait for the job: read again once every job is held.
    return (await this.readLocked(first.map((r) => r.job_id as string), find())).map(toAttempt);
  }

  async extendLiveLeases(minExpiresAt: number): Promise<number> {
    const r = await this.q`UPDATE attempts SET expires_at = ${minExpiresAt} WHERE state IN ${this.q(LIVE_STATES)} AND expires_at < ${minExpiresAt}`;
    return r.count;
  }

  async addTransition(jobId: string, t: TransitionRow): Promise<void> {
    const row = { job_id: jobId, attempt: t.attempt, at: t.at, from_state: t.from, to_state: t.to, reason: t.reason };
    // In a transaction the rows wait for one INSERT at the end (their ids keep their order).
    if (this.locking) this.transitions.push(row);
    else await this.q`INSERT INTO transitions ${this.q(row)}`;
  }

  async listTransitions(jobId: string): Promise<TransitionRow[]> {
    this.flush();
    return (await this.q`SELECT * FROM transitions WHERE job_id = ${jobId} ORDER BY id`).map(toTransition);
  }

  async insertRunner(r: RunnerRow): Promise<void> {
    await this.put(this.q`INSERT INTO runners(id, name, version, capabilities, session_hash, session_expires_at, session_used, created_at)
      VALUES (${r.id}, ${r.name}, ${r.version}, ${JSON.stringify(r.capabilities)}, ${r.sessionHash}, ${r.sessionExpiresAt}, ${r.sessionUsed ? 1 : 0}, ${r.createdAt})`);
  }

  async getRunnerBySession(hash: string): Promise<RunnerRow | undefined> {
    const [r] = this.locking ? await this.q`SELECT * FROM runners WHERE session_hash = ${hash} FOR UPDATE` : await this.q`SELECT * FROM runners WHERE session_hash = ${hash}`;
    return r ? toRunner(r) : undefined;
  }

  async getRunner(id: string): Promise<RunnerRow | undefined> {
    const [r] = this.locking ? await this.q`SELECT * FROM runners WHERE id = ${id} FOR UPDATE` : await this.q`SELECT * FROM runners WHERE id = ${id}`;
    return r ? toRunner(r) : undefined;
  }

  async markSessionUsed(runnerId: string): Promise<void> {
    await this.put(this.q`UPDATE runners SET session_used = 1 WHERE id = ${runnerId}`);
  }

  async insertRegistration(r: RegistrationRow): Promise<void> {
    await this.put(this.q`INSERT INTO registrations(hash, labels, expires_at, used_at) VALUES (${r.hash}, ${JSON.stringify(r.labels)}, ${r.expiresAt}, ${r.usedAt})`);
  }

  async getRegistration(hash: string): Promise<RegistrationRow | undefined> {
    const [r] = this.locking ? await this.q`SELECT * FROM registrations WHERE hash = ${hash} FOR UPDATE` : await this.q`SELECT * FROM registrations WHERE hash = ${hash}`;
    return r ? toRegistration(r) : undefined;
  }

  async markRegistrationUsed(hash: string, at: number): Promise<void> {
    await this.put(this.q`UPDATE registrations SET used_at = ${at} WHERE hash = ${hash}`);
  }

  async insertArtifact(a: ArtifactRow): Promise<void> {
    await this.put(this.q`INSERT INTO artifacts(id, job_id, attempt, name, size, sha256, media_type, path, state, created_at)
      VALUES (${a.id}, ${a.jobId}, ${a.attempt}, ${a.name}, ${a.size}, ${a.sha256}, ${a.mediaType}, ${a.path}, ${a.state}, ${a.createdAt})`);
  }

  async getArtifact(id: string): Promise<ArtifactRow | undefined> {
    const [r] = await this.q`SELECT * FROM artifacts WHERE id = ${id}`;
    return r ? toArtifact(r) : undefined;
  }

  async findArtifact(jobId: string, attempt: number, name: string): Promise<ArtifactRow | undefined> {
    const [r] = await this.q`SELECT * FROM artifacts WHERE job_id = ${jobId} AND attempt = ${attempt} AND name = ${name}`;
    return r ? toArtifact(r) : undefined;
  }

  async setArtifactCommitted(id: string): Promise<void> {
    await this.put(this.q`UPDATE artifacts SET state = 'committed' WHERE id = ${id}`);
  }

  async deleteArtifact(id: string): Promise<void> {
    await this.put(this.q`DELETE FROM artifacts WHERE id = ${id}`);
  }

  async listArtifacts(jobId: string, attempt: number): Promise<ArtifactRow[]> {
    return (await this.q`SELECT * FROM artifacts WHERE job_id = ${jobId} AND attempt = ${attempt} ORDER BY name`).map(toArtifact);
  }

  /** One row per append; the caller holds the job, so `start` is the committed end. */
  async appendLogChunk(jobId: string, attempt: number, start: number, parts: readonly Buffer[]): Promise<void> {
    const data = parts.length === 1 && parts[0] ? parts[0] : Buffer.concat(parts);
    await this.put(this.q`INSERT INTO log_chunks(job_id, attempt, start_off, end_off, data) VALUES (${jobId}, ${attempt}, ${start}, ${start + data.length}, ${data})`);
  }

  async readLogChunks(jobId: string, attempt: number, offset: number, limit: number): Promise<Array<{ start: number; data: Buffer }>> {
    const rows = await this.q`SELECT start_off, data FROM log_chunks WHERE job_id = ${jobId} AND attempt = ${attempt} AND end_off > ${offset} ORDER BY start_off LIMIT ${limit}`;
    return rows.map((r) => ({ start: r.start_off as number, data: r.data as Buffer }));
  }

  async getKv(key: string): Promise<string | undefined> {
    const [r] = await this.q`SELECT value FROM kv WHERE key = ${key}`;
    return r ? (r.value as string) : undefined;
  }

  async setKv(key: string, value: string): Promise<void> {
    await this.put(this.q`INSERT INTO kv(key, value) VALUES (${key}, ${value}) ON CONFLICT (key) DO UPDATE SET value = excluded.value`);
  }

  // ---- retention and garbage collection (pg-gc.ts) ----
  blobCollecting(sha256: string): Promise<boolean> {
    return this.gc.blobCollecting(sha256);
  }
  gcEpoch(): Promise<number> {
    return this.gc.gcEpoch();
  }
  expiredJobIds(finishedBefore: number, limit: number): Promise<string[]> {
    return this.gc.expiredJobIds(finishedBefore, limit);
  }
  async deleteJobs(ids: readonly string[], finishedBefore: number): Promise<{ jobs: number; logBytes: number }> {
    await this.settle();
    for (const id of ids) if (this.locked.has(id)) this.locked.set(id, null);
    return this.gc.deleteJobs(ids, finishedBefore);
  }
  deleteExpiredRegistrations(now: number): Promise<number> {
    return this.gc.deleteExpiredRegistrations(now);
  }
  deleteDeadRunners(now: number): Promise<number> {
    return this.gc.deleteDeadRunners(now);
  }
  markUnreferencedBlobs(candidates: readonly BlobRef[], now: number): Promise<BlobRef[]> {
    return this.gc.markUnreferencedBlobs(candidates, now);
  }
  blobMarks(): Promise<BlobRef[]> {
    return this.gc.blobMarks();
  }
  clearBlobMarks(sha256s: readonly string[]): Promise<void> {
    return this.gc.clearBlobMarks(sha256s);
  }
  unarchivedLogs(endedBefore: number, limit: number): Promise<Array<{ jobId: string; attempt: number }>> {
    return this.gc.unarchivedLogs(endedBefore, limit);
  }
  async setLogArchived(jobId: string, attempt: number, sha256: string): Promise<void> {
    await this.settle();
    return this.gc.setLogArchived(jobId, attempt, sha256);
  }
}
