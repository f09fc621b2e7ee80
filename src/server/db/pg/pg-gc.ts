/**
 * The collector's and the log archive's statements on PostgreSQL (StateOps' retention, GC and
 * archive part). Replicas write concurrently, so the blob gate is an advisory transaction lock: a writer about to reference a
 * blob takes it shared (`blobCollecting`), a transaction that marks or clears blobs takes it
 * exclusively. Under READ COMMITTED each statement after the lock sees every transaction that
 * held it before: marking sees every reference committed so far, and a writer sees every mark.
 */
import type { Sql, TransactionSql } from "postgres";
import type { BlobRef } from "../../engine/state-store.ts";
import { TERMINAL_JOB } from "../../engine/transitions.ts";
import { GC_EPOCH_KV } from "../rows.ts";
import { PG_LOCKS } from "./pg-schema.ts";

const LIVE_STATES = ["leased", "running", "canceling"];
const TERMINAL_STATES = [...TERMINAL_JOB];

export class PgGc {
  constructor(
    private readonly q: Sql | TransactionSql,
    private readonly locking: boolean,
  ) {}

  async blobCollecting(sha256: string): Promise<boolean> {
    if (this.locking) await this.q`SELECT pg_advisory_xact_lock_shared(${PG_LOCKS.blobGate})`;
    return (await this.q`SELECT 1 FROM blob_marks WHERE sha256 = ${sha256}`).length > 0;
  }

  async gcEpoch(): Promise<number> {
    const [r] = await this.q`SELECT value FROM kv WHERE key = ${GC_EPOCH_KV}`;
    return Number(r?.value ?? 0);
  }

  private async gateExclusive(): Promise<void> {
    if (!this.locking) throw new Error("blob marks change only inside a transaction");
    await this.q`SELECT pg_advisory_xact_lock(${PG_LOCKS.blobGate})`;
  }

  private async bumpEpoch(): Promise<void> {
    await this.q`INSERT INTO kv(key, value) VALUES (${GC_EPOCH_KV}, '1') ON CONFLICT (key) DO UPDATE SET value = (kv.value::bigint + 1)::text`;
  }

  async expiredJobIds(finishedBefore: number, limit: number): Promise<string[]> {
    const rows = await this.q`SELECT id FROM jobs WHERE finished_at < ${finishedBefore} AND state = ANY(${TERMINAL_STATES}) ORDER BY finished_at LIMIT ${limit}`;
    return rows.map((r) => r.id as string);
  }

  /** Jobs another transaction holds are left for the next pass (SKIP LOCKED). */
  async deleteJobs(ids: readonly string[], finishedBefore: number): Promise<{ jobs: number; logBytes: number }> {
    const held = (await this.q`
      SELECT id FROM jobs WHERE id = ANY(${[...ids]}) AND finished_at < ${finishedBefore} AND state = ANY(${TERMINAL_STATES})
      ORDER BY id FOR UPDATE SKIP LOCKED`).map((r) => r.id as string);
    if (held.length === 0) return { jobs: 0, logBytes: 0 };
    const [sum] = await this.q`SELECT COALESCE(SUM(log_bytes), 0)::bigint AS n FROM attempts WHERE job_id = ANY(${held}) AND log_blob IS NULL`;
    await this.q`DELETE FROM attempts WHERE job_id = ANY(${held})`;
    await this.q`DELETE FROM transitions WHERE job_id = ANY(${held})`;
    await this.q`DELETE FROM log_chunks WHERE job_id = ANY(${held})`;
    await this.q`DELETE FROM artifacts WHERE job_id = ANY(${held})`;
    await this.q`DELETE FROM jobs WHERE id = ANY(${held})`;
    return { jobs: held.length, logBytes: Number(sum?.n ?? 0) };
  }

  async deleteExpiredRegistrations(now: number): Promise<number> {
    return (await this.q`DELETE FROM registrations WHERE expires_at < ${now}`).count;
  }

  async deleteDeadRunners(now: number): Promise<number> {
    const r = await this.q`
      DELETE FROM runners WHERE session_expires_at < ${now}
        AND id NOT IN (SELECT runner_id FROM attempts WHERE state = ANY(${LIVE_STATES}) AND runner_id IS NOT NULL)`;
    return r.count;
  }

  async markUnreferencedBlobs(candidates: readonly BlobRef[], now: number): Promise<BlobRef[]> {
    if (candidates.length === 0) return [];
    await this.gateExclusive();
    const shas = candidates.map((c) => c.sha256);
    const used = new Set([
      ...(await this.q`SELECT DISTINCT sha256 FROM artifacts WHERE sha256 = ANY(${shas})`).map((r) => r.sha256 as string),
      ...(await this.q`SELECT DISTINCT (spec::jsonb -> 'source' ->> 'sha256') AS s FROM jobs WHERE (spec::jsonb -> 'source' ->> 'sha256') = ANY(${shas})`)
        .map((r) => r.s as string),
      ...(await this.q`SELECT DISTINCT log_blob FROM attempts WHERE log_blob = ANY(${shas})`).map((r) => r.log_blob as string),
    ]);
    const out = candidates.filter((c) => !used.has(c.sha256));
    if (out.length === 0) return [];
    await this.q`
      INSERT INTO blob_marks(sha256, size, marked_at)
      SELECT s, z, ${now} FROM unnest(${out.map((c) => c.sha256)}::text[], ${out.map((c) => c.size)}::bigint[]) AS t(s, z)
      ON CONFLICT (sha256) DO NOTHING`;
    await this.bumpEpoch();
    return out;
  }

  async blobMarks(): Promise<BlobRef[]> {
    return (await this.q`SELECT sha256, size FROM blob_marks ORDER BY sha256`).map((r) => ({ sha256: r.sha256 as string, size: r.size as number }));
  }

  async unarchivedLogs(endedBefore: number, limit: number): Promise<Array<{ jobId: string; attempt: number }>> {
    const rows = await this.q`SELECT job_id, attempt FROM attempts
      WHERE log_blob IS NULL AND finished_at < ${endedBefore} AND NOT (state = ANY(${LIVE_STATES})) ORDER BY finished_at LIMIT ${limit}`;
    return rows.map((r) => ({ jobId: r.job_id as string, attempt: r.attempt as number }));
  }

  /** The caller holds the job row (it read the attempt in this transaction), so no append or archive races this. */
  async setLogArchived(jobId: string, attempt: number, sha256: string): Promise<void> {
    await this.q`UPDATE attempts SET log_blob = ${sha256} WHERE job_id = ${jobId} AND attempt = ${attempt}`;
    await this.q`DELETE FROM log_chunks WHERE job_id = ${jobId} AND attempt = ${attempt}`;
  }

  async clearBlobMarks(sha256s: readonly string[]): Promise<void> {
    if (sha256s.length === 0) return;
    await this.gateExclusive();
    await this.q`DELETE FROM blob_marks WHERE sha256 = ANY(${[...sha256s]})`;
    await this.bumpEpoch();
  }
}
