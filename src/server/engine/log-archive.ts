/**
 * Finished logs move from the state store (SQLite log files, PostgreSQL `log_chunks`) to the blob
 * store, one content-addressed blob per attempt, once nothing can append to them: the attempt
 * ended (not live) and its tail window closed. One pass every `logArchiveIntervalMs` on the
 * replica that sweeps. Per attempt, in this order, so a crash between any two steps loses nothing:
 *  1. read the committed bytes (outside a transaction: they no longer change) into `put`;
 *  2. in one transaction that holds the job: check the attempt still has exactly those bytes and
 *     no blob yet, that the blob is not being collected (`blobCollecting`) and that no mark came
 *     or went since step 1 (`gcEpoch`, as a submit does: collector.ts); then set `log_blob` and
 *     drop the live copy. A second archiver (another replica, a restart) finds `log_blob` set.
 * A crash before the commit leaves the live copy (still read) and maybe an unreferenced blob,
 * which the collector removes; the next pass archives again (the put deduplicates).
 * An empty log is recorded as the empty blob's digest without storing it: no read opens it.
 */
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import type { BlobStore } from "../blobs/blob-store.ts";
import type { EngineContext } from "./context.ts";
import type { StateOps } from "./state-store.ts";
import { LIVE_ATTEMPT } from "./transitions.ts";
import type { AttemptRow } from "./types.ts";
import { whileSweeping } from "./while-sweeping.ts";

/** The slice of the blob store the archive uses. */
export type LogBlobs = Pick<BlobStore, "put" | "openRange">;

/** What archiving needs of the engine (tests drive it on stores of their own). */
export type ArchiveContext = Pick<EngineContext, "store" | "clock" | "opts" | "metrics" | "logger">;

export type ArchiveOutcome = "archived" | "skipped";

const EMPTY_SHA = createHash("sha256").digest("hex");
/** Attempts looked up per query of a pass. */
const ARCHIVE_BATCH = 100;
/** Chunk rows read per query while streaming a live log (readLogChunks' `limit`). */
const READ_ROWS = 64;

/** Can nothing append to this attempt's log any more (log-ops.ts `assertMayLog` refuses it)? */
export function logSettled(ctx: Pick<EngineContext, "clock" | "opts">, a: AttemptRow): boolean {
  return !LIVE_ATTEMPT.has(a.state) && a.state !== "queued" && a.finishedAt !== null && ctx.clock.now() - a.finishedAt > ctx.opts.tailWindowMs;
}

/** The committed bytes of a live (not archived) log from `offset`, up to `end`, as they are read. */
export async function* liveLogBytes(reads: StateOps, jobId: string, attempt: number, offset: number, end: number): AsyncGenerator<Buffer> {
  let at = offset;
  while (at < end) {
    const chunks = await reads.readLogChunks(jobId, attempt, at, READ_ROWS);
    if (chunks.length === 0) return;
    for (const c of chunks) {
      if (at >= end) return;
      const part = c.data.subarray(Math.max(0, at - c.start), end - c.start);
      at = c.start + Math.min(c.data.length, end - c.start);
      if (part.length > 0) yield part;
    }
  }
}

/** Archives one attempt's log if it is settled and not archived yet (see the file comment). */
export async function archiveLog(ctx: ArchiveContext, blobs: LogBlobs, jobId: string, attempt: number): Promise<ArchiveOutcome> {
  const a = await ctx.store.getAttempt(jobId, attempt);
  if (!a || a.logBlob !== null || !logSettled(ctx, a)) return "skipped";
  const epoch = await ctx.store.gcEpoch();
  const stored = a.logBytes === 0
    ? { sha256: EMPTY_SHA, size: 0 }
    : await blobs.put(Readable.from(liveLogBytes(ctx.store, jobId, attempt, 0, a.logBytes)), a.logBytes);
  if (stored.size !== a.logBytes) {
    // Another archiver (a replica that just took the sweeper role) moved it while we read: done.
    const moved = await ctx.store.getAttempt(jobId, attempt);
    if (!moved || moved.logBlob !== null) return "skipped";
    throw new Error(`log of ${jobId}/${attempt}: read ${stored.size} of its ${a.logBytes} committed bytes`);
  }
  return ctx.store.write(async (tx) => {
    const now = await tx.getAttempt(jobId, attempt);
    if (!now || now.logBlob !== null || now.logBytes !== a.logBytes || !logSettled(ctx, now)) return "skipped";
    if (a.logBytes > 0 && ((await tx.blobCollecting(stored.sha256)) || (await tx.gcEpoch()) !== epoch)) return "skipped";
    await tx.setLogArchived(jobId, attempt, stored.sha256);
    tx.afterCommit(() => ctx.metrics.logArchived(a.logBytes));
    return "archived";
  });
}

/** One pass: every settled, unarchived log, oldest first. Failures are logged and retried by the next pass. */
export async function archiveLogs(ctx: ArchiveContext, blobs: LogBlobs, signal?: AbortSignal): Promise<{ archived: number; failed: number }> {
  const out = { archived: 0, failed: 0 };
  const endedBefore = ctx.clock.now() - ctx.opts.tailWindowMs;
  const tried = new Set<string>();
  for (;;) {
    const batch = (await ctx.store.unarchivedLogs(endedBefore, ARCHIVE_BATCH + tried.size)).filter((x) => !tried.has(`${x.jobId}/${x.attempt}`));
    if (batch.length === 0) return out;
    for (const { jobId, attempt } of batch) {
      signal?.throwIfAborted();
      tried.add(`${jobId}/${attempt}`);
      try {
        if ((await archiveLog(ctx, blobs, jobId, attempt)) === "archived") out.archived++;
      } catch (err) {
        out.failed++;
        ctx.logger?.warn({ err, jobId, attempt }, "could not archive a log (retried next pass)");
      }
    }
  }
}

/** Runs `archiveLogs` every `logArchiveIntervalMs` while this replica sweeps, until `signal` aborts. */
export async function runLogArchiver(ctx: EngineContext, blobs: LogBlobs, signal: AbortSignal): Promise<void> {
  await whileSweeping(ctx, ctx.opts.logArchiveIntervalMs, signal, "log archive", async () => {
    const r = await archiveLogs(ctx, blobs, signal);
    if (r.archived > 0) ctx.logger?.debug({ archived: r.archived, failed: r.failed }, "logs archived");
  });
}
