/**
 * Artifacts: create (dedup against the content store), resumable upload, verify, commit.
 * Bytes go through `Blobs`; this file owns only the rules (fencing, immutability, visibility).
 */
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { DeltaError } from "../../base/errors.ts";
import { newId } from "../../base/ids.ts";
import { isSafeArtifactPath } from "../../protocol/artifact-path.ts";
import type { ArtifactCreateRequest, ArtifactCreateResponse, ArtifactUpload } from "../../protocol/schemas.ts";
import type { BlobStore } from "../blobs/blob-store.ts";
import { blobCollectingError } from "./collector.ts";
import type { EngineContext } from "./context.ts";
import { fencedAttempt } from "./lease-fence.ts";
import type { ArtifactRow } from "./types.ts";

/** The slice of the blob store artifacts need (server/blobs/blob-store.ts documents it). */
export type Blobs = Pick<BlobStore, "has" | "put" | "directUpload" | "uploadOffset" | "appendUpload" | "finishUpload" | "discardUpload">;

const EMPTY_SHA = createHash("sha256").digest("hex");

export function uploadUrl(artifactId: string): string {
  return `/v1/runner/artifacts/${artifactId}/content`;
}

export function commitUrl(artifactId: string): string {
  return `/v1/runner/artifacts/${artifactId}/commit`;
}

export async function createArtifact(ctx: EngineContext, blobs: Blobs, leaseHash: string, body: ArtifactCreateRequest): Promise<ArtifactCreateResponse> {
  if (body.size > ctx.opts.artifactMaxBytes) throw new DeltaError("E_TOO_LARGE", `artifact exceeds ${ctx.opts.artifactMaxBytes} bytes`);
  if (body.path !== undefined && !isSafeArtifactPath(body.path)) {
    throw new DeltaError("E_INVALID", "artifact path must be relative, with no empty, `.` or `..` segment, no NUL or backslash");
  }
  if (body.size === 0 && body.sha256 !== EMPTY_SHA) throw new DeltaError("E_DIGEST_MISMATCH", "an empty artifact has the sha256 of no bytes");
  // The row goes in (pending) before the store is asked for the blob: from then on the collector
  // sees it referenced, so a blob found below stays (collector.ts); one being collected now is refused.
  const row = await ctx.store.write(async (tx) => {
    const { a } = await fencedAttempt(ctx, tx, leaseHash);
    const existing = await tx.findArtifact(a.jobId, a.attempt, body.name);
    if (existing) {
      if (existing.sha256 !== body.sha256 || existing.size !== body.size || existing.path !== (body.path ?? null)) {
        throw new DeltaError("E_CONFLICT", `artifact ${body.name} already exists with other content (artifacts are immutable)`);
      }
      return existing;
    }
    if (await tx.blobCollecting(body.sha256)) throw blobCollectingError(body.sha256);
    const created: ArtifactRow = {
      id: newId("art"), jobId: a.jobId, attempt: a.attempt, name: body.name, size: body.size, sha256: body.sha256,
      mediaType: body.mediaType ?? "application/octet-stream", path: body.path ?? null, state: "pending",
      createdAt: ctx.clock.now(),
    };
    await tx.insertArtifact(created);
    return created;
  });
  if (row.state === "pending" && (await heldOrEmpty(blobs, body))) {
    await ctx.store.write(async (tx) => {
      await fencedAttempt(ctx, tx, leaseHash);
      await tx.setArtifactCommitted(row.id);
    });
    row.state = "committed";
  }
  return { artifactId: row.id, upload: row.state === "committed" ? null : await uploadSpec(blobs, row) };
}

/** Does the store hold the blob (deduplicated: nothing to upload)? The empty blob is stored on demand. */
async function heldOrEmpty(blobs: Blobs, body: ArtifactCreateRequest): Promise<boolean> {
  if (await blobs.has(body.sha256, body.size)) return true;
  if (body.size !== 0) return false;
  await blobs.put(Readable.from([]), 0);
  return true;
}

/**
 * How to upload. Through the server: one PUT of the whole body with these headers is a complete
 * upload; a client that resumes sends `Content-Range: bytes START-END/TOTAL` from the offset HEAD
 * reports. Direct (object store): presigned requests, then a POST to `commitUrl`; asking again
 * (create is idempotent) lists only what the store still misses.
 */
async function uploadSpec(blobs: Blobs, a: ArtifactRow): Promise<ArtifactUpload> {
  const direct = await blobs.directUpload(a.id, a.size);
  if (direct === null) {
    return { url: uploadUrl(a.id), method: "PUT", headers: { "content-type": "application/octet-stream", "content-length": String(a.size) } };
  }
  if (direct.parts === null) return { url: direct.url, method: "PUT", headers: direct.headers, commitUrl: commitUrl(a.id) };
  return { url: commitUrl(a.id), method: "POST", headers: {}, commitUrl: commitUrl(a.id), parts: direct.parts };
}

/** The pending artifact `artifactId` of the token's own live attempt. */
async function ownArtifact(ctx: EngineContext, leaseHash: string, artifactId: string): Promise<ArtifactRow> {
  const { a } = await fencedAttempt(ctx, ctx.store, leaseHash);
  const art = await ctx.store.getArtifact(artifactId);
  if (!art || art.jobId !== a.jobId || art.attempt !== a.attempt) throw new DeltaError("E_NOT_FOUND", "no such artifact for this lease");
  return art;
}

export async function uploadStatus(ctx: EngineContext, blobs: Blobs, leaseHash: string, artifactId: string): Promise<{ offset: number; size: number; committed: boolean }> {
  const art = await ownArtifact(ctx, leaseHash, artifactId);
  if (art.state === "committed") return { offset: art.size, size: art.size, committed: true };
  return { offset: await blobs.uploadOffset(art.id), size: art.size, committed: false };
}

export type UploadResult = { done: false; committed: number } | { done: true; artifactId: string; sha256: string; size: number };

/** A byte range of an upload (END inclusive); null: the whole body, from byte 0 (a complete upload). */
export type UploadRange = { start: number; end: number; total: number } | null;

export async function uploadChunk(
  ctx: EngineContext, blobs: Blobs, leaseHash: string, artifactId: string, given: UploadRange, body: Readable, contentLength?: number,
): Promise<UploadResult> {
  const art = await ownArtifact(ctx, leaseHash, artifactId);
  const whole = given === null;
  const range = given ?? { start: 0, end: art.size - 1, total: art.size };
  if (whole && contentLength !== undefined && contentLength !== art.size) {
    body.resume();
    throw new DeltaError("E_INVALID", `body has ${contentLength} bytes; the artifact was declared with ${art.size}`);
  }
  if (range.total !== art.size) throw new DeltaError("E_INVALID", `Content-Range total ${range.total} differs from the declared size ${art.size}`);
  if (art.state === "committed") {
    body.resume();
    return { done: true, artifactId: art.id, sha256: art.sha256, size: art.size };
  }
  if (ctx.uploadsInFlight.has(art.id)) {
    body.resume();
    throw new DeltaError("E_CONFLICT", "another upload of this artifact is in progress");
  }
  ctx.uploadsInFlight.add(art.id);
  try {
    // A whole-body PUT starts over: bytes an earlier attempt left are not the start of this one.
    if (whole) await blobs.discardUpload(art.id);
    return await finishChunk(ctx, blobs, leaseHash, art, range, body);
  } finally {
    ctx.uploadsInFlight.delete(art.id);
  }
}

async function finishChunk(
  ctx: EngineContext, blobs: Blobs, leaseHash: string, art: ArtifactRow, range: { start: number; end: number }, body: Readable,
): Promise<UploadResult> {
  const committed = await blobs.appendUpload(art.id, range.start, body, range.end - range.start + 1);
  if (committed < range.end + 1) return { done: false, committed };
  if (committed < art.size) return { done: false, committed };
  return commitUpload(ctx, blobs, leaseHash, art);
}

/** Verifies the stored bytes (size, sha256) and makes the artifact visible; a mismatch deletes the upload and the record. */
async function commitUpload(ctx: EngineContext, blobs: Blobs, leaseHash: string, art: ArtifactRow): Promise<UploadResult & { done: true }> {
  try {
    await blobs.finishUpload(art.id, { sha256: art.sha256, size: art.size });
  } catch (err) {
    // The store kept nothing (finishUpload discards on any failure): forget the record too.
    await ctx.store.write((tx) => tx.deleteArtifact(art.id));
    throw err;
  }
  await ctx.store.write(async (tx) => {
    await fencedAttempt(ctx, tx, leaseHash);
    await tx.setArtifactCommitted(art.id);
  });
  return { done: true, artifactId: art.id, sha256: art.sha256, size: art.size };
}

/** `POST …/commit` after a direct upload: the server reads the bytes back, checks them, and commits. */
export async function commitDirectUpload(ctx: EngineContext, blobs: Blobs, leaseHash: string, artifactId: string): Promise<UploadResult & { done: true }> {
  const art = await ownArtifact(ctx, leaseHash, artifactId);
  if (art.state === "committed") return { done: true, artifactId: art.id, sha256: art.sha256, size: art.size };
  if (ctx.uploadsInFlight.has(art.id)) throw new DeltaError("E_CONFLICT", "another upload or commit of this artifact is in progress");
  ctx.uploadsInFlight.add(art.id);
  try {
    return await commitUpload(ctx, blobs, leaseHash, art);
  } finally {
    ctx.uploadsInFlight.delete(art.id);
  }
}

/** Committed artifact `name` of the job's current attempt (download). */
export async function findDownload(ctx: EngineContext, jobId: string, name: string): Promise<ArtifactRow> {
  const job = await ctx.store.getJob(jobId);
  if (!job) throw new DeltaError("E_NOT_FOUND", `no job ${jobId}`);
  const art = await ctx.store.findArtifact(jobId, job.attempt, name);
  if (!art || art.state !== "committed") throw new DeltaError("E_NOT_FOUND", `job ${jobId} has no artifact ${name}`);
  return art;
}
