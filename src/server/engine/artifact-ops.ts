/**
 * Artifacts: create (dedup against the content store), resumable upload, verify, commit.
 * Bytes go through `Blobs`; this file owns only the rules (fencing, immutability, visibility).
 */
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { DeltaError } from "../../base/errors.ts";
import { hashToken, newId } from "../../base/ids.ts";
import type { ArtifactCreateRequest, ArtifactCreateResponse } from "../../protocol/schemas.ts";
import type { EngineContext } from "./context.ts";
import { LIVE_ATTEMPT } from "./transitions.ts";
import type { ArtifactRow, AttemptRow } from "./types.ts";

/** The slice of the content store artifacts need. */
export interface Blobs {
  has(sha256: string, size?: number): boolean;
  put(body: Readable, maxBytes: number, expect?: { sha256: string; size: number }): Promise<{ sha256: string; size: number }>;
  uploadOffset(uploadId: string): Promise<number>;
  appendUpload(uploadId: string, start: number, body: Readable, maxBytes: number): Promise<number>;
  finishUpload(uploadId: string, expect: { sha256: string; size: number }): Promise<void>;
  discardUpload(uploadId: string): Promise<void>;
}

const EMPTY_SHA = createHash("sha256").digest("hex");

export function uploadUrl(artifactId: string): string {
  return `/v1/runner/artifacts/${artifactId}/content`;
}

/** The live, current attempt a lease token acts on (401 unknown, 409 stale). */
export function fencedAttempt(ctx: EngineContext, leaseToken: string): AttemptRow {
  const a = ctx.store.getAttemptByLeaseHash(hashToken(leaseToken));
  if (!a) throw new DeltaError("E_TOKEN_INVALID", "lease token is unknown");
  const job = ctx.store.getJob(a.jobId);
  if (!job) throw new DeltaError("E_TOKEN_INVALID", "lease token is unknown");
  if (!LIVE_ATTEMPT.has(a.state) || job.attempt !== a.attempt || (a.expiresAt ?? 0) <= ctx.clock.now()) {
    throw new DeltaError("E_LEASE_STALE", `lease is stale: attempt ${a.attempt} is ${a.state}`);
  }
  return a;
}

export async function createArtifact(ctx: EngineContext, blobs: Blobs, leaseToken: string, body: ArtifactCreateRequest): Promise<ArtifactCreateResponse> {
  if (body.size > ctx.opts.artifactMaxBytes) throw new DeltaError("E_TOO_LARGE", `artifact exceeds ${ctx.opts.artifactMaxBytes} bytes`);
  if (body.size === 0 && body.sha256 !== EMPTY_SHA) throw new DeltaError("E_DIGEST_MISMATCH", "an empty artifact has the sha256 of no bytes");
  if (body.size === 0 && !blobs.has(EMPTY_SHA)) {
    await blobs.put(Readable.from([]), 0);
  }
  return ctx.store.write(() => {
    const a = fencedAttempt(ctx, leaseToken);
    const existing = ctx.store.findArtifact(a.jobId, a.attempt, body.name);
    if (existing) {
      if (existing.sha256 !== body.sha256 || existing.size !== body.size) {
        throw new DeltaError("E_CONFLICT", `artifact ${body.name} already exists with other content (artifacts are immutable)`);
      }
      return { artifactId: existing.id, upload: existing.state === "committed" ? null : uploadSpec(existing) };
    }
    const row: ArtifactRow = {
      id: newId("art"), jobId: a.jobId, attempt: a.attempt, name: body.name, size: body.size, sha256: body.sha256,
      mediaType: body.mediaType ?? "application/octet-stream", state: blobs.has(body.sha256, body.size) ? "committed" : "pending",
      createdAt: ctx.clock.now(),
    };
    ctx.store.insertArtifact(row);
    return { artifactId: row.id, upload: row.state === "committed" ? null : uploadSpec(row) };
  });
}

function uploadSpec(a: ArtifactRow): { url: string; method: string; headers: Record<string, string> } {
  return { url: uploadUrl(a.id), method: "PUT", headers: { "content-type": "application/octet-stream" } };
}

/** The pending artifact `artifactId` of the token's own live attempt. */
function ownArtifact(ctx: EngineContext, leaseToken: string, artifactId: string): ArtifactRow {
  const a = fencedAttempt(ctx, leaseToken);
  const art = ctx.store.getArtifact(artifactId);
  if (!art || art.jobId !== a.jobId || art.attempt !== a.attempt) throw new DeltaError("E_NOT_FOUND", "no such artifact for this lease");
  return art;
}

export async function uploadStatus(ctx: EngineContext, blobs: Blobs, leaseToken: string, artifactId: string): Promise<{ offset: number; size: number; committed: boolean }> {
  const art = ownArtifact(ctx, leaseToken, artifactId);
  if (art.state === "committed") return { offset: art.size, size: art.size, committed: true };
  return { offset: await blobs.uploadOffset(art.id), size: art.size, committed: false };
}

export type UploadResult = { done: false; committed: number } | { done: true; artifactId: string; sha256: string; size: number };

export async function uploadChunk(
  ctx: EngineContext, blobs: Blobs, leaseToken: string, artifactId: string,
  range: { start: number; end: number; total: number }, body: Readable,
): Promise<UploadResult> {
  const art = ownArtifact(ctx, leaseToken, artifactId);
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
    return await finishChunk(ctx, blobs, leaseToken, art, range, body);
  } finally {
    ctx.uploadsInFlight.delete(art.id);
  }
}

async function finishChunk(
  ctx: EngineContext, blobs: Blobs, leaseToken: string, art: ArtifactRow, range: { start: number; end: number }, body: Readable,
): Promise<UploadResult> {
  const committed = await blobs.appendUpload(art.id, range.start, body, range.end - range.start + 1);
  if (committed < range.end + 1) return { done: false, committed };
  if (committed < art.size) return { done: false, committed };
  try {
    await blobs.finishUpload(art.id, { sha256: art.sha256, size: art.size });
  } catch (err) {
    await ctx.store.write(() => ctx.store.deleteArtifact(art.id));
    throw err;
  }
  await ctx.store.write(() => {
    fencedAttempt(ctx, leaseToken);
    ctx.store.setArtifactCommitted(art.id);
  });
  return { done: true, artifactId: art.id, sha256: art.sha256, size: art.size };
}

/** Committed artifact `name` of the job's current attempt (download). */
export function findDownload(ctx: EngineContext, jobId: string, name: string): ArtifactRow {
  const job = ctx.store.getJob(jobId);
  if (!job) throw new DeltaError("E_NOT_FOUND", `no job ${jobId}`);
  const art = ctx.store.findArtifact(jobId, job.attempt, name);
  if (!art || art.state !== "committed") throw new DeltaError("E_NOT_FOUND", `job ${jobId} has no artifact ${name}`);
  return art;
}
