/**
 * The server's blob store (artifacts, source archives): content-addressed by sha256, immutable,
 * deduplicated. Two implementations pass one conformance suite (blob-store.conformance.ts):
 * `FsBlobStore` (the default, under the data dir) and `S3BlobStore` (any S3-compatible store).
 *
 * Lifecycle: `init()` once before use; every method may then run concurrently; `close()` last.
 * A blob is visible (`has`, `open`) only once its bytes are complete and verified.
 *
 * Staged uploads are keyed by a server-made id (an artifact id, or a source upload id). A store
 * takes their bytes either through the server (`appendUpload`, resumable by offset) or straight
 * from the client (`directUpload` describes presigned requests); either way `finishUpload`
 * verifies size and sha256 and only then moves the bytes into the store.
 */
import type { Readable } from "node:stream";
import { DeltaError } from "../../base/errors.ts";

export interface BlobInfo {
  sha256: string;
  size: number;
}

/** One byte range of a multipart direct upload: PUT bytes [offset, offset + size) to `url`. */
export interface DirectPart {
  partNumber: number;
  offset: number;
  size: number;
  url: string;
}

/**
 * Requests a client makes itself, with no server token: either one PUT of the whole body to
 * `url` with `headers`, or (`parts` not null) one PUT per part. Parts the store already holds
 * are left out, so asking again after a failure or a restart resumes.
 */
export interface DirectUpload {
  url: string;
  headers: Record<string, string>;
  parts: DirectPart[] | null;
}

/** A blob or a staged upload as listed for the collector; `modifiedAt` in ms since the epoch. */
export interface StoredBlob {
  sha256: string;
  size: number;
  modifiedAt: number;
}

export interface StagedUpload {
  uploadId: string;
  /** Bytes staged so far (0 when the store cannot tell, e.g. an unfinished multipart upload). */
  size: number;
  modifiedAt: number;
}

export interface BlobStore {
  /** `fs` or `s3`, for logs and status. */
  readonly kind: string;
  init(): Promise<void>;
  close(): Promise<void>;
  has(sha256: string, size?: number): Promise<boolean>;
  /** The bytes of a blob; `E_NOT_FOUND` when the store does not hold it. */
  open(sha256: string): Promise<Readable>;
  /** Bytes `[start, end]` (inclusive) of a blob, with `start <= end < size`; `E_NOT_FOUND` when the store does not hold it. */
  openRange(sha256: string, start: number, end: number): Promise<Readable>;
  /** Streams `body` into the store (at most `maxBytes`); verifies `expect` when given (`E_DIGEST_MISMATCH`). */
  put(body: Readable, maxBytes: number, expect?: BlobInfo): Promise<BlobInfo>;

  /** Presigned requests for upload `uploadId` of `size` bytes; null: this store takes bytes through the server. */
  directUpload(uploadId: string, size: number): Promise<DirectUpload | null>;
  /** Bytes of a through-the-server upload the store holds. */
  uploadOffset(uploadId: string): Promise<number>;
  /** Appends `body` at `start` (must equal the offset, else `E_RANGE` with `committed`); returns the new offset. */
  appendUpload(uploadId: string, start: number, body: Readable, maxBytes: number): Promise<number>;
  /** Verifies a staged upload and moves it into the store; else deletes it and throws `E_DIGEST_MISMATCH`. */
  finishUpload(uploadId: string, expect: BlobInfo): Promise<void>;
  /** Forgets a staged upload (idempotent). */
  discardUpload(uploadId: string): Promise<void>;

  // ---- garbage collection (engine/collector.ts decides what is garbage) ----
  /** Every verified blob. Blobs stored or deleted meanwhile may or may not be listed. */
  listBlobs(): AsyncIterable<StoredBlob>;
  /** Deletes a blob (idempotent). Only the collector calls it, for blobs it marked. */
  deleteBlob(sha256: string): Promise<void>;
  /** Every staged upload (through the server or direct), with when it was last written. */
  listUploads(): AsyncIterable<StagedUpload>;
}

export const SHA256_HEX = /^[a-f0-9]{64}$/;
export const UPLOAD_ID = /^[A-Za-z0-9_-]{1,128}$/;

export function checkSha256(sha256: string): string {
  if (!SHA256_HEX.test(sha256)) throw new DeltaError("E_INVALID", "not a sha256 digest");
  return sha256;
}

/** Checks a byte range for `openRange`. */
export function checkRange(start: number, end: number): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) throw new DeltaError("E_INVALID", `bad byte range ${start}-${end}`);
}

export function checkUploadId(uploadId: string): string {
  if (!UPLOAD_ID.test(uploadId)) throw new DeltaError("E_INVALID", "bad upload id");
  return uploadId;
}

export function digestMismatch(got: BlobInfo, expect: BlobInfo): DeltaError {
  return new DeltaError(
    "E_DIGEST_MISMATCH",
    `upload has ${got.size} bytes with sha256 ${got.sha256}; expected ${expect.size} bytes with ${expect.sha256}; nothing was kept`,
  );
}
