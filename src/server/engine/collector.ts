/**
 * Retention and garbage collection, one pass every `gcIntervalMs` on the replica that sweeps,
 * only when a retention is set (`--retention`): nothing is deleted otherwise.
 *
 * A pass deletes, in order: terminal jobs finished more than `retentionMs` ago (attempts,
 * transitions, logs, artifact rows, secrets and lease tokens go with them), expired registration
 * tokens, dead runner records, staged uploads abandoned for `gcStaleUploadMs`, then blobs nothing
 * references. Blobs use marks, so an upload or submit in flight is never broken:
 *  1. list the store's blobs older than `gcGraceMs` (a fresh blob may be about to be referenced);
 *  2. in one transaction (the blob gate, exclusive on PostgreSQL) mark those no row references;
 *  3. delete the marked blobs from the store, then clear their marks.
 * A writer that references a blob checks for its mark in its own transaction (`blobCollecting`:
 * E_UNAVAILABLE, retryable) and, when it checked the store before that transaction, that no
 * mark came or went since (`gcEpoch`): so a blob is never referenced while it is being deleted.
 */
import { DeltaError } from "../../base/errors.ts";
import type { BlobStore } from "../blobs/blob-store.ts";
import type { EngineContext } from "./context.ts";
import type { BlobRef } from "./state-store.ts";
import { LIVE_ATTEMPT } from "./transitions.ts";
import { whileSweeping } from "./while-sweeping.ts";

/** The slice of the blob store the collector uses. */
export type GcBlobs = Pick<BlobStore, "listBlobs" | "deleteBlob" | "listUploads" | "discardUpload">;

/** What one pass removed: counts and bytes by kind. */
export interface GcResult {
  removed: Record<GcWhat, number>;
  reclaimedBytes: Record<GcWhat, number>;
}

export const GC_WHAT = ["jobs", "logs", "registrations", "runners", "uploads", "blobs"] as const;
export type GcWhat = (typeof GC_WHAT)[number];

/** Candidate blobs marked per transaction. */
const MARK_BATCH = 500;

function emptyResult(): GcResult {
  const zero = () => Object.fromEntries(GC_WHAT.map((w) => [w, 0])) as Record<GcWhat, number>;
  return { removed: zero(), reclaimedBytes: zero() };
}

/** One pass (see the file comment). `retentionMs` must be set. `signal` stops it between batches (what is done stays done). */
export async function collect(ctx: EngineContext, blobs: GcBlobs, signal?: AbortSignal): Promise<GcResult> {
  const { retentionMs, gcJobBatch } = ctx.opts;
  if (retentionMs === null) throw new Error("collect: no retention set");
  const out = emptyResult();
  const finishedBefore = ctx.clock.now() - retentionMs;
  for (;;) {
    signal?.throwIfAborted();
    const ids = await ctx.store.expiredJobIds(finishedBefore, gcJobBatch);
    if (ids.length === 0) break;
    const r = await ctx.store.write((tx) => tx.deleteJobs(ids, finishedBefore));
    if (r.jobs > 0) ctx.knownTokens.clear(); // their lease tokens are gone
    out.removed.jobs += r.jobs;
    out.removed.logs += r.jobs;
    out.reclaimedBytes.logs += r.logBytes;
    if (ids.length < gcJobBatch || r.jobs === 0) break;
  }
  const now = ctx.clock.now();
  out.removed.registrations = await ctx.store.write((tx) => tx.deleteExpiredRegistrations(now));
  out.removed.runners = await ctx.store.write((tx) => tx.deleteDeadRunners(now));
  signal?.throwIfAborted();
  await collectUploads(ctx, blobs, out, signal);
  await collectBlobs(ctx, blobs, out, signal);
  return out;
}

/** Staged uploads untouched for `gcStaleUploadMs` that no live attempt owns. */
async function collectUploads(ctx: EngineContext, blobs: GcBlobs, out: GcResult, signal: AbortSignal | undefined): Promise<void> {
  const staleBefore = ctx.clock.now() - ctx.opts.gcStaleUploadMs;
  for await (const u of blobs.listUploads()) {
    signal?.throwIfAborted();
    if (u.modifiedAt >= staleBefore || ctx.uploadsInFlight.has(u.uploadId)) continue;
    if (await ownedByLiveAttempt(ctx, u.uploadId)) continue;
    await blobs.discardUpload(u.uploadId);
    out.removed.uploads++;
    out.reclaimedBytes.uploads += u.size;
  }
}

async function ownedByLiveAttempt(ctx: EngineContext, uploadId: string): Promise<boolean> {
  const art = await ctx.store.getArtifact(uploadId);
  if (!art || art.state === "committed") return false;
  const a = await ctx.store.getAttempt(art.jobId, art.attempt);
  return a !== undefined && LIVE_ATTEMPT.has(a.state);
}

async function collectBlobs(ctx: EngineContext, blobs: GcBlobs, out: GcResult, signal: AbortSignal | undefined): Promise<void> {
  // Marks an earlier pass left (it stopped before clearing them): finish those first.
  await deleteMarked(ctx, blobs, await ctx.store.blobMarks(), out);
  const oldBefore = ctx.clock.now() - ctx.opts.gcGraceMs;
  let batch: BlobRef[] = [];
  const flush = async () => {
    const now = ctx.clock.now();
    const candidates = batch;
    batch = [];
    const marked = await ctx.store.write((tx) => tx.markUnreferencedBlobs(candidates, now));
    await deleteMarked(ctx, blobs, marked, out);
  };
  for await (const b of blobs.listBlobs()) {
    if (b.modifiedAt >= oldBefore) continue;
    signal?.throwIfAborted();
    batch.push({ sha256: b.sha256, size: b.size });
    if (batch.length >= MARK_BATCH) await flush();
  }
  if (batch.length > 0) await flush();
}

async function deleteMarked(ctx: EngineContext, blobs: GcBlobs, marked: readonly BlobRef[], out: GcResult): Promise<void> {
  if (marked.length === 0) return;
  for (const b of marked) {
    await blobs.deleteBlob(b.sha256);
    out.removed.blobs++;
    out.reclaimedBytes.blobs += b.size;
  }
  await ctx.store.write((tx) => tx.clearBlobMarks(marked.map((b) => b.sha256)));
}

/** The error a writer gets for a blob being collected now: retry, and it is uploaded again. */
export function blobCollectingError(sha256: string): DeltaError {
  return new DeltaError("E_UNAVAILABLE", `blob ${sha256} is being garbage-collected; retry shortly (it will have to be uploaded again)`);
}

/**
 * After storing a source archive: a store that already held it kept the old copy (dedup), which
 * may be marked and about to go; the client then gets a retryable answer instead of a later
 * "not in the store" at submit (which re-checks under the gate: see job-ops.ts).
 */
export async function refuseIfCollecting(ctx: EngineContext, sha256: string): Promise<void> {
  if (await ctx.store.blobCollecting(sha256)) throw blobCollectingError(sha256);
}

/** Runs `collect` every `gcIntervalMs` while this replica sweeps, until `signal` aborts (never when no retention is set). */
export async function runCollector(ctx: EngineContext, blobs: GcBlobs, signal: AbortSignal): Promise<void> {
  if (ctx.opts.retentionMs === null) return;
  await whileSweeping(ctx, ctx.opts.gcIntervalMs, signal, "garbage collection", async () => {
    const r = await collect(ctx, blobs, signal);
    ctx.metrics.gcPass(r);
    if (GC_WHAT.some((w) => r.removed[w] > 0)) ctx.logger?.info({ removed: r.removed, reclaimedBytes: r.reclaimedBytes }, "garbage collected");
  });
}
