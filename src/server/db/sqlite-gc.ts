/**
 * The collector's and the log archive's statements on SQLite (StateOps' retention, GC and
 * archive part). One connection runs one transaction at a time, so marking and a writer's
 * `blobCollecting` check never interleave.
 */
import type { Statement } from "better-sqlite3";
import type { BlobRef, TxHooks } from "../engine/state-store.ts";
import type { LogFiles } from "./log-files.ts";
import { GC_EPOCH_KV, LIVE, type Raw, TERMINAL } from "./rows.ts";

/** Bound on `?` parameters per statement (SQLite's default limit is 32766). */
const IN_CHUNK = 500;

type St = (sql: string) => Statement;

function chunks<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += IN_CHUNK) out.push(items.slice(i, i + IN_CHUNK));
  return out;
}

const marks = (n: number) => Array.from({ length: n }, () => "?").join(",");

export class SqliteGc {
  constructor(
    private readonly st: St,
    private readonly logs: LogFiles,
  ) {}

  blobCollecting(sha256: string): boolean {
    return this.st("SELECT 1 FROM blob_marks WHERE sha256 = ?").get(sha256) !== undefined;
  }

  gcEpoch(): number {
    return Number(this.st("SELECT value FROM kv WHERE key = ?").pluck().get(GC_EPOCH_KV) ?? 0);
  }

  private bumpEpoch(): void {
    this.st("INSERT INTO kv(key, value) VALUES (?, '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1").run(GC_EPOCH_KV);
  }

  expiredJobIds(finishedBefore: number, limit: number): string[] {
    return this.st(`SELECT id FROM jobs WHERE finished_at < ? AND state IN ${TERMINAL} ORDER BY finished_at LIMIT ?`).pluck().all(finishedBefore, limit) as string[];
  }

  /** Log files go after the commit (a rolled-back delete keeps them). */
  deleteJobs(hooks: TxHooks, ids: readonly string[], finishedBefore: number): { jobs: number; logBytes: number } {
    let jobs = 0;
    let logBytes = 0;
    const files: Array<[string, number]> = [];
    for (const id of ids) {
      const ok = this.st(`SELECT 1 FROM jobs WHERE id = ? AND finished_at < ? AND state IN ${TERMINAL}`).get(id, finishedBefore);
      if (ok === undefined) continue;
      for (const a of this.st("SELECT attempt, log_bytes, log_blob FROM attempts WHERE job_id = ?").all(id) as Raw[]) {
        files.push([id, a.attempt as number]);
        if (a.log_blob === null) logBytes += a.log_bytes as number;
      }
      for (const table of ["attempts", "transitions", "log_chunks", "artifacts"]) this.st(`DELETE FROM ${table} WHERE job_id = ?`).run(id);
      this.st("DELETE FROM jobs WHERE id = ?").run(id);
      jobs++;
    }
    hooks.afterCommit(() => {
      for (const [id, attempt] of files) this.logs.remove(id, attempt);
    });
    return { jobs, logBytes };
  }

  deleteExpiredRegistrations(now: number): number {
    return this.st("DELETE FROM registrations WHERE expires_at < ?").run(now).changes;
  }

  deleteDeadRunners(now: number): number {
    return this.st(
      `DELETE FROM runners WHERE session_expires_at < ? AND id NOT IN (SELECT runner_id FROM attempts WHERE state IN ${LIVE} AND runner_id IS NOT NULL)`,
    ).run(now).changes;
  }

  markUnreferencedBlobs(candidates: readonly BlobRef[], now: number): BlobRef[] {
    const out: BlobRef[] = [];
    for (const part of chunks(candidates)) {
      const shas = part.map((c) => c.sha256);
      const used = new Set([
        ...(this.st(`SELECT DISTINCT sha256 FROM artifacts WHERE sha256 IN (${marks(shas.length)})`).pluck().all(...shas) as string[]),
        ...(this.st(`SELECT DISTINCT json_extract(spec, '$.source.sha256') FROM jobs WHERE json_extract(spec, '$.source.sha256') IN (${marks(shas.length)})`)
          .pluck().all(...shas) as string[]),
        ...(this.st(`SELECT DISTINCT log_blob FROM attempts WHERE log_blob IN (${marks(shas.length)})`).pluck().all(...shas) as string[]),
      ]);
      for (const c of part) {
        if (used.has(c.sha256)) continue;
        this.st("INSERT INTO blob_marks(sha256, size, marked_at) VALUES (?, ?, ?) ON CONFLICT(sha256) DO NOTHING").run(c.sha256, c.size, now);
        out.push(c);
      }
    }
    if (out.length > 0) this.bumpEpoch();
    return out;
  }

  blobMarks(): BlobRef[] {
    return (this.st("SELECT sha256, size FROM blob_marks ORDER BY sha256").all() as Raw[]).map((r) => ({ sha256: r.sha256 as string, size: r.size as number }));
  }

  unarchivedLogs(endedBefore: number, limit: number): Array<{ jobId: string; attempt: number }> {
    const rows = this.st(`SELECT job_id, attempt FROM attempts WHERE log_blob IS NULL AND finished_at < ? AND state NOT IN ${LIVE} ORDER BY finished_at LIMIT ?`)
      .all(endedBefore, limit) as Raw[];
    return rows.map((r) => ({ jobId: r.job_id as string, attempt: r.attempt as number }));
  }

  /** The log file goes after the commit (a rolled-back archive keeps it); chunks an older server wrote go with the transaction. */
  setLogArchived(hooks: TxHooks, jobId: string, attempt: number, sha256: string): void {
    this.st("UPDATE attempts SET log_blob = ? WHERE job_id = ? AND attempt = ?").run(sha256, jobId, attempt);
    this.st("DELETE FROM log_chunks WHERE job_id = ? AND attempt = ?").run(jobId, attempt);
    hooks.afterCommit(() => this.logs.remove(jobId, attempt));
  }

  clearBlobMarks(sha256s: readonly string[]): void {
    if (sha256s.length === 0) return;
    for (const part of chunks(sha256s)) this.st(`DELETE FROM blob_marks WHERE sha256 IN (${marks(part.length)})`).run(...part);
    this.bumpEpoch();
  }
}
