/**
 * Per-attempt log storage: resumable appends at committed offsets (PROTOCOL.md `PUT /v1/runner/log`),
 * the per-job limit, the tail window, and reads for the job API. Bytes live in the state store
 * (committed with the same group commit as everything else, so acknowledged bytes survive SIGKILL)
 * until the log is final; then in the blob store (log-archive.ts), read from there transparently.
 */
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { DeltaError } from "../../base/errors.ts";
import { defaults } from "../../config/defaults.ts";
import { type ByteParts, partsLength, sliceParts } from "./byte-parts.ts";
import type { EngineContext } from "./context.ts";
import { liveLogBytes, type LogBlobs } from "./log-archive.ts";
import { keys } from "./notifier.ts";
import { LIVE_ATTEMPT, wake } from "./transitions.ts";
import type { StagedLogBytes, StateOps } from "./state-store.ts";
import type { AttemptRow } from "./types.ts";

export interface ContentRange {
  start: number;
  /** Inclusive. */
  end: number;
}

/** Parses `bytes START-END/*` or `bytes START-END/TOTAL`. */
export function parseContentRange(header: string | undefined): ContentRange {
  const m = header ? /^bytes (\d{1,15})-(\d{1,15})\/(\*|\d{1,15})$/.exec(header.trim()) : null;
  if (!m) throw new DeltaError("E_INVALID", "Content-Range must be `bytes START-END/*` (END inclusive)");
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (end < start) throw new DeltaError("E_INVALID", "Content-Range END is before START");
  if (m[3] !== "*" && end >= Number(m[3])) throw new DeltaError("E_INVALID", "Content-Range END is beyond TOTAL");
  return { start, end };
}

export type AppendResult = { status: 202; committed: number } | { status: 413; committed: number; truncated: true };

/**
 * How long an append that arrived ahead of its offset (the runner keeps two PUTs in flight, on
 * separate connections) waits for the appends before it to commit before answering 416.
 */
export const LOG_ORDER_WAIT_MS = defaults.logOrderWaitMs;

/**
 * Appends at least this large stage their bytes before their transaction (StateStore.stageLogBytes):
 * the file write and its fdatasync leave the event loop, which meanwhile reads the next PUT and
 * commits the one before. Small appends (and their per-request cost) are untouched.
 */
export const STAGE_MIN_BYTES = 256 * 1024;

/**
 * Appends a body (as the parts it arrived in) at `range.start` for the lease token hashed
 * `leaseHash`; see PROTOCOL.md for the rules. `signal` (the client went away) is asked for only
 * when the append waits for its turn.
 */
export async function appendLog(ctx: EngineContext, leaseHash: string, range: ContentRange, body: ByteParts, signal?: () => AbortSignal): Promise<AppendResult> {
  const length = partsLength(body);
  if (length !== range.end - range.start + 1) {
    throw new DeltaError("E_INVALID", `body has ${length} bytes, Content-Range says ${range.end - range.start + 1}`);
  }
  const staged = length >= STAGE_MIN_BYTES ? await stage(ctx, leaseHash, range, body) : null;
  try {
    return await appendAt(ctx, leaseHash, range, body, length, staged);
  } catch (err) {
    // Ahead of its offset (PUTs overtake each other): wait for the appends before it, then once more.
    if (!(err instanceof DeltaError && err.code === "E_RANGE")) throw err;
    await awaitTurn(ctx, leaseHash, range.start, signal?.());
    return appendAt(ctx, leaseHash, range, body, length, staged);
  }
}

/**
 * Stages the part of the body past what the attempt holds now (never rewriting committed bytes
 * with another request's); a failure only means the transaction writes the bytes itself.
 */
async function stage(ctx: EngineContext, leaseHash: string, range: ContentRange, body: ByteParts): Promise<StagedLogBytes | null> {
  if (!ctx.store.stageLogBytes) return null;
  // Not held back by the previous append's WAL sync: this append's stage overlaps it (its
  // transaction reads the attempt again and decides; bytes past the committed end are never read).
  const a = ctx.store.peekAttemptByLeaseHash ? await ctx.store.peekAttemptByLeaseHash(leaseHash) : await ctx.store.getAttemptByLeaseHash(leaseHash);
  if (!a || !LIVE_ATTEMPT.has(a.state)) return null;
  const from = Math.max(range.start, a.logBytes);
  if (from > range.end) return null;
  try {
    return await ctx.store.stageLogBytes(a.jobId, a.attempt, from, sliceParts(body, from - range.start, range.end + 1 - range.start));
  } catch (err) {
    ctx.logger?.warn({ err, jobId: a.jobId, attempt: a.attempt }, "staging a log append failed; its transaction writes it");
    return null;
  }
}

async function appendAt(ctx: EngineContext, leaseHash: string, range: ContentRange, body: ByteParts, length: number, staged: StagedLogBytes | null): Promise<AppendResult> {
  return ctx.store.write(async (tx) => {
    const found = await tx.getLeasedAttempt(leaseHash);
    if (!found?.job) throw new DeltaError("E_TOKEN_INVALID", "lease token is unknown");
    const { a, job } = found;
    assertMayLog(ctx, a, job.attempt);
    const committed = a.logBytes;
    if (range.start > committed) {
      throw new DeltaError("E_RANGE", `gap: the server holds ${committed} bytes`, { details: { committed } });
    }
    if (a.logTruncated) return { status: 413 as const, committed, truncated: true as const };
    const skip = committed - range.start;
    const freshLength = Math.max(0, length - skip);
    if (freshLength === 0) return { status: 202 as const, committed };
    const keptLength = Math.min(freshLength, Math.max(0, job.logLimit - committed));
    const kept = sliceParts(body, skip, skip + keptLength);
    if (keptLength > 0) await tx.appendLogChunk(a.jobId, a.attempt, committed, kept, staged);
    const now = committed + keptLength;
    const truncated = keptLength < freshLength;
    await tx.updateAttempt(a.jobId, a.attempt, { logBytes: now, ...(truncated ? { logTruncated: true } : {}) });
    if (truncated) {
      await tx.addTransition(a.jobId, { at: ctx.clock.now(), attempt: a.attempt, from: "log", to: "log:truncated", reason: `log limit of ${job.logLimit} bytes reached` });
    }
    tx.afterCommit(() => {
      if (keptLength > 0) ctx.logDigests.appended(a.jobId, a.attempt, committed, kept);
      ctx.metrics.logBytes(keptLength);
    });
    wake(ctx, tx, keys.log(a.jobId));
    return truncated ? { status: 413 as const, committed: now, truncated: true as const } : { status: 202 as const, committed: now };
  });
}

/**
 * Waits (bounded) until the attempt's committed log reaches `start`: PUTs may arrive out of order.
 * Never past the lease's expiry (re-read each turn: a heartbeat may extend it): a held append
 * of an expiring lease is answered when the lease ends, not up to LOG_ORDER_WAIT_MS later.
 */
async function awaitTurn(ctx: EngineContext, leaseHash: string, start: number, signal?: AbortSignal): Promise<void> {
  const deadline = ctx.clock.now() + LOG_ORDER_WAIT_MS;
  let jobId: string | null = null;
  for (;;) {
    // Armed before the read (once the job is known): an append committing while the read is out
    // (a PostgreSQL round trip) still wakes us. The first turn's read learns the job.
    const armed = jobId === null ? null : ctx.events.arm([keys.log(jobId), keys.shutdown]);
    try {
      const a = await ctx.store.getAttemptByLeaseHash(leaseHash);
      const leaseEnd = a && LIVE_ATTEMPT.has(a.state) ? (a.expiresAt ?? 0) : Infinity;
      const left = Math.min(deadline, leaseEnd) - ctx.clock.now();
      if (!a || a.logBytes >= start || left <= 0 || signal?.aborted || ctx.lifecycle.stopping) return;
      if (armed === null) {
        jobId = a.jobId; // read again, armed this time
        continue;
      }
      if (!(await armed.wait(left, ctx.clock, signal))) return;
    } finally {
      armed?.off();
    }
  }
}

/** Live attempts log freely; a terminal one (not lost, not superseded) only within the tail window. */
function assertMayLog(ctx: EngineContext, a: AttemptRow, current: number): void {
  if (a.attempt !== current) throw new DeltaError("E_LEASE_STALE", `attempt ${a.attempt} was superseded`);
  if (LIVE_ATTEMPT.has(a.state)) {
    if ((a.expiresAt ?? 0) <= ctx.clock.now()) throw new DeltaError("E_LEASE_STALE", `attempt ${a.attempt} expired`);
    return;
  }
  if (a.state === "lost" || a.endedBy === "lost") throw new DeltaError("E_LEASE_STALE", `attempt ${a.attempt} was lost`);
  // Archived: its window closed by another replica's clock; the log is final.
  if (a.logBlob !== null) throw new DeltaError("E_LEASE_STALE", `attempt ${a.attempt} ended and its log was archived`);
  if (a.finishedAt !== null && ctx.clock.now() - a.finishedAt <= ctx.opts.tailWindowMs) return;
  throw new DeltaError("E_LEASE_STALE", `attempt ${a.attempt} ended and its tail window closed`);
}

/** sha256 of an attempt's committed log (the running digest when it covers it, else read back). */
export async function logDigest(ctx: EngineContext, reads: StateOps, a: AttemptRow): Promise<string> {
  const running = ctx.logDigests.digest(a.jobId, a.attempt, a.logBytes);
  if (running !== null) return running;
  const h = createHash("sha256");
  let offset = 0;
  for (;;) {
    const chunks = await reads.readLogChunks(a.jobId, a.attempt, offset, 256);
    if (chunks.length === 0) break;
    for (const c of chunks) {
      h.update(c.data.subarray(Math.max(0, offset - c.start)));
      offset = c.start + c.data.length;
    }
  }
  return h.digest("hex");
}

/** Committed bytes of an attempt's log from `offset`, at most `maxBytes`: from the state store, or from its blob once archived. */
export async function readLog(ctx: EngineContext, blobs: LogBlobs, jobId: string, attempt: number, offset: number, maxBytes: number): Promise<Buffer> {
  const a = await ctx.store.getAttempt(jobId, attempt);
  if (!a) return Buffer.alloc(0);
  if (a.logBlob !== null) return readArchived(blobs, a, offset, maxBytes);
  const parts: Buffer[] = [];
  for await (const p of liveLogBytes(ctx.store, jobId, attempt, offset, offset + maxBytes)) parts.push(p);
  const live = Buffer.concat(parts);
  if (live.length > 0 || offset >= a.logBytes) return live;
  // Nothing where bytes were committed: the log was archived meanwhile, and its live copy dropped.
  const again = await ctx.store.getAttempt(jobId, attempt);
  return again?.logBlob ? readArchived(blobs, again, offset, maxBytes) : live;
}

/** The rest of an archived log from `offset`, as one ranged read of its blob; null while the log is live. */
export async function openArchivedLog(ctx: EngineContext, blobs: LogBlobs, jobId: string, attempt: number, offset: number): Promise<Readable | null> {
  const a = await ctx.store.getAttempt(jobId, attempt);
  if (!a?.logBlob) return null;
  return offset >= a.logBytes ? Readable.from([]) : blobs.openRange(a.logBlob, offset, a.logBytes - 1);
}

async function readArchived(blobs: LogBlobs, a: AttemptRow, offset: number, maxBytes: number): Promise<Buffer> {
  const end = Math.min(a.logBytes, offset + maxBytes);
  if (offset >= end || a.logBlob === null) return Buffer.alloc(0);
  const parts: Buffer[] = [];
  for await (const p of await blobs.openRange(a.logBlob, offset, end - 1)) parts.push(p as Buffer);
  return Buffer.concat(parts);
}
