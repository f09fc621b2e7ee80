/**
 * Blob store on any S3-compatible object store (AWS S3, MinIO, R2, Swift s3api). Keys under
 * `<prefix>`: `cas/sha256/<hex>` holds verified blobs only; `uploads/<id>` stages an upload.
 *
 * Uploads go from the client straight to the bucket through presigned URLs: one PUT below the
 * multipart threshold, else a multipart upload whose state lives in the bucket (found again by
 * ListMultipartUploads), so asking again after a failed part or a restart lists only the parts
 * still missing. `finishUpload` completes the multipart upload, reads the staged object back
 * (size, sha256), and copies exactly that version (CopySourceIfMatch on its ETag) to its content
 * address: a client that rewrites the staged object after verification only fails its own upload.
 */
import { createHash, randomBytes } from "node:crypto";
import { PassThrough, Transform, Writable, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import {
  AbortMultipartUploadCommand, CompleteMultipartUploadCommand, CopyObjectCommand, CreateMultipartUploadCommand, DeleteObjectCommand,
  GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, ListPartsCommand, PutObjectCommand, S3Client, UploadPartCommand,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { DeltaError } from "../../base/errors.ts";
import type { AwsCredentials } from "../../config/server-config.ts";
import {
  checkRange, checkSha256, checkUploadId, digestMismatch, SHA256_HEX, UPLOAD_ID, type BlobInfo, type BlobStore, type DirectPart, type DirectUpload,
  type StagedUpload, type StoredBlob,
} from "./blob-store.ts";

/** S3's own limits: parts of 5 MiB..5 GiB, at most 10,000 of them; CopyObject copies at most 5 GiB. */
const MIN_PART_BYTES = 5 * 1024 * 1024;
const MAX_PARTS = 10_000;
export const S3_MAX_BLOB_BYTES = 5 * 1024 * 1024 * 1024;

export interface S3BlobStoreOptions {
  bucket: string;
  /** Key prefix, `""` or ending in `/`. */
  prefix: string;
  endpoint?: string | undefined;
  region: string;
  forcePathStyle: boolean;
  /** Absent: the AWS SDK's default chain (env, ~/.aws files, SSO, instance roles). */
  credentials?: AwsCredentials | undefined;
  partSizeBytes: number;
  multipartThresholdBytes: number;
  presignExpiryMs: number;
}

interface HeldPart {
  PartNumber: number;
  Size: number;
  ETag: string;
}

export class S3BlobStore implements BlobStore {
  readonly kind = "s3";
  readonly client: S3Client;
  private readonly o: S3BlobStoreOptions;

  constructor(o: S3BlobStoreOptions) {
    this.o = o;
    const config: S3ClientConfig = {
      region: o.region, forcePathStyle: o.forcePathStyle,
      // Default checksums send stream bodies aws-chunked, which S3-compatible stores often refuse.
      requestChecksumCalculation: "WHEN_REQUIRED", responseChecksumValidation: "WHEN_REQUIRED",
    };
    if (o.endpoint !== undefined) config.endpoint = o.endpoint;
    if (o.credentials !== undefined) config.credentials = o.credentials;
    this.client = new S3Client(config);
  }

  /** Checks the bucket answers (credentials, endpoint, bucket name) before the server listens. */
  async init(): Promise<void> {
    await this.client.send(new ListObjectsV2Command({ Bucket: this.o.bucket, Prefix: `${this.o.prefix}cas/`, MaxKeys: 1 })).catch((err: unknown) => {
      throw new DeltaError("E_UNAVAILABLE", `blob store s3://${this.o.bucket}/${this.o.prefix}: ${(err as Error).message}`, { cause: err });
    });
  }

  async close(): Promise<void> {
    this.client.destroy();
  }

  private blobKey(sha256: string): string {
    return `${this.o.prefix}cas/sha256/${checkSha256(sha256)}`;
  }

  private stagingKey(uploadId: string): string {
    return `${this.o.prefix}uploads/${checkUploadId(uploadId)}`;
  }

  /** Size and ETag of an object, or null when there is none. */
  private async head(Key: string): Promise<{ size: number; etag: string } | null> {
    try {
      const h = await this.client.send(new HeadObjectCommand({ Bucket: this.o.bucket, Key }));
      return { size: h.ContentLength ?? 0, etag: h.ETag ?? "" };
    } catch (err) {
      if (statusOf(err) === 404) return null;
      throw err;
    }
  }

  async has(sha256: string, size?: number): Promise<boolean> {
    if (!SHA256_HEX.test(sha256)) return false;
    const h = await this.head(this.blobKey(sha256));
    return h !== null && (size === undefined || h.size === size);
  }

  async open(sha256: string): Promise<Readable> {
    return this.get(sha256);
  }

  async openRange(sha256: string, start: number, end: number): Promise<Readable> {
    checkRange(start, end);
    return this.get(sha256, `bytes=${start}-${end}`);
  }

  private async get(sha256: string, Range?: string): Promise<Readable> {
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.o.bucket, Key: this.blobKey(sha256), ...(Range === undefined ? {} : { Range }) }));
      return r.Body as Readable;
    } catch (err) {
      if (statusOf(err) === 404) throw new DeltaError("E_NOT_FOUND", `no blob ${sha256}`, { cause: err });
      throw err;
    }
  }

  async put(body: Readable, maxBytes: number, expect?: BlobInfo): Promise<BlobInfo> {
    const id = `put-${randomBytes(12).toString("hex")}`;
    const Key = this.stagingKey(id);
    const hashing = new HashingCap(maxBytes);
    const out = new PassThrough();
    const feeding = pipeline(body, hashing, out);
    feeding.catch(() => undefined); // awaited below; a failed upload must not leave it unhandled
    try {
      const upload = new Upload({ client: this.client, params: { Bucket: this.o.bucket, Key, Body: out }, partSize: this.o.partSizeBytes, queueSize: 4 });
      await Promise.all([feeding, upload.done()]);
      const got = hashing.info();
      if (expect && (expect.size !== got.size || expect.sha256 !== got.sha256)) throw digestMismatch(got, expect);
      const staged = await this.head(Key);
      if (!staged || staged.size !== got.size) throw new DeltaError("E_INTERNAL", `staged object ${Key} is not what was written`);
      await this.adopt(Key, staged.etag, got);
      return got;
    } catch (err) {
      body.destroy();
      out.destroy();
      throw err;
    } finally {
      await this.deleteKey(Key);
    }
  }

  async directUpload(uploadId: string, size: number): Promise<DirectUpload | null> {
    if (size > S3_MAX_BLOB_BYTES) throw new DeltaError("E_TOO_LARGE", `the S3 blob store takes blobs up to ${S3_MAX_BLOB_BYTES} bytes`);
    const Key = this.stagingKey(uploadId);
    const expiresIn = Math.max(1, Math.floor(this.o.presignExpiryMs / 1000));
    if (size < this.o.multipartThresholdBytes) {
      const url = await getSignedUrl(this.client, new PutObjectCommand({ Bucket: this.o.bucket, Key }), { expiresIn });
      return { url, headers: { "content-length": String(size) }, parts: null };
    }
    const UploadId = (await this.multipartUploads(Key))[0] ?? (await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.o.bucket, Key }))).UploadId;
    if (!UploadId) throw new DeltaError("E_INTERNAL", "the object store made no multipart upload id");
    const held = new Map((await this.listParts(Key, UploadId)).map((p) => [p.PartNumber, p.Size]));
    const parts: DirectPart[] = [];
    for (const p of partLayout(size, this.o.partSizeBytes)) {
      if (held.get(p.partNumber) === p.size) continue;
      const url = await getSignedUrl(this.client, new UploadPartCommand({ Bucket: this.o.bucket, Key, UploadId, PartNumber: p.partNumber }), { expiresIn });
      parts.push({ ...p, url });
    }
    return { url: "", headers: {}, parts };
  }

  async uploadOffset(): Promise<number> {
    throw notThroughServer();
  }

  async appendUpload(_uploadId: string, _start: number, body: Readable): Promise<number> {
    body.resume();
    throw notThroughServer();
  }

  async finishUpload(uploadId: string, expect: BlobInfo): Promise<void> {
    const Key = this.stagingKey(uploadId);
    try {
      await this.completeMultipart(Key, expect.size);
      const staged = await this.head(Key);
      if (!staged || staged.size !== expect.size) throw digestMismatch({ size: staged?.size ?? 0, sha256: "(not read)" }, expect);
      const got = await this.hashObject(Key, staged.etag);
      if (got.sha256 !== expect.sha256 || got.size !== expect.size) throw digestMismatch(got, expect);
      await this.adopt(Key, staged.etag, got);
    } finally {
      await this.discardUpload(uploadId);
    }
  }

  async discardUpload(uploadId: string): Promise<void> {
    const Key = this.stagingKey(uploadId);
    for (const UploadId of await this.multipartUploads(Key)) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.o.bucket, Key, UploadId })).catch(ignore404);
    }
    await this.deleteKey(Key);
  }

  /** Completes the one multipart upload of `Key` that holds every part of a `size`-byte body; aborts the others. */
  private async completeMultipart(Key: string, size: number): Promise<void> {
    const layout = partLayout(size, this.o.partSizeBytes);
    for (const UploadId of await this.multipartUploads(Key)) {
      const held = new Map((await this.listParts(Key, UploadId)).map((p) => [p.PartNumber, p]));
      const whole = held.size === layout.length && layout.every((p) => held.get(p.partNumber)?.Size === p.size);
      if (!whole) {
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.o.bucket, Key, UploadId })).catch(ignore404);
        continue;
      }
      const Parts = layout.map((p) => ({ PartNumber: p.partNumber, ETag: held.get(p.partNumber)?.ETag ?? "" }));
      await this.client.send(new CompleteMultipartUploadCommand({ Bucket: this.o.bucket, Key, UploadId, MultipartUpload: { Parts } }));
    }
  }

  /**
   * Copies the verified version `etag` of `from` to the blob's address (an existing blob wins: dedup).
   * A single-PUT staging object could be rewritten through its presigned URL, so the copy is
   * conditional on the verified ETag. A multipart one (ETag `…-N`) cannot: no single-PUT URL is
   * ever made for a multipart-sized upload, and only finishUpload completes one; Swift's s3api
   * also compares copy conditions against its manifest's own ETag, so the condition would fail.
   */
  private async adopt(from: string, etag: string, info: BlobInfo): Promise<void> {
    if (await this.has(info.sha256, info.size)) return;
    const multipart = /-\d+"?$/.test(etag);
    try {
      await this.client.send(new CopyObjectCommand({
        Bucket: this.o.bucket, Key: this.blobKey(info.sha256), CopySource: `${this.o.bucket}/${from}`, ...(multipart ? {} : { CopySourceIfMatch: etag }),
      }));
    } catch (err) {
      if (statusOf(err) === 412) throw new DeltaError("E_DIGEST_MISMATCH", "the upload changed after it was verified; nothing was kept", { cause: err });
      throw err;
    }
  }

  private async hashObject(Key: string, etag: string): Promise<BlobInfo> {
    const r = await this.client.send(new GetObjectCommand({ Bucket: this.o.bucket, Key, IfMatch: etag }));
    const h = new HashingCap(Number.MAX_SAFE_INTEGER);
    await pipeline(r.Body as Readable, h, new Writable({ write: (_chunk, _enc, done) => done() }));
    return h.info();
  }

  private async multipartUploads(Key: string): Promise<string[]> {
    const r = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.o.bucket, Prefix: Key }));
    return (r.Uploads ?? [])
      .filter((u) => u.Key === Key && u.UploadId)
      .sort((a, b) => (a.Initiated?.getTime() ?? 0) - (b.Initiated?.getTime() ?? 0))
      .map((u) => u.UploadId ?? "");
  }

  private async listParts(Key: string, UploadId: string): Promise<HeldPart[]> {
    const out: HeldPart[] = [];
    let marker: string | undefined;
    for (;;) {
      const r = await this.client.send(new ListPartsCommand({ Bucket: this.o.bucket, Key, UploadId, PartNumberMarker: marker }));
      for (const p of r.Parts ?? []) {
        if (p.PartNumber !== undefined && p.ETag) out.push({ PartNumber: p.PartNumber, Size: p.Size ?? 0, ETag: p.ETag });
      }
      if (!r.IsTruncated || r.NextPartNumberMarker === undefined) return out;
      marker = r.NextPartNumberMarker;
    }
  }

  // ---- garbage collection ----

  async *listBlobs(): AsyncIterable<StoredBlob> {
    const prefix = `${this.o.prefix}cas/sha256/`;
    for await (const o of this.listKeys(prefix)) {
      const sha256 = o.key.slice(prefix.length);
      if (SHA256_HEX.test(sha256)) yield { sha256, size: o.size, modifiedAt: o.modifiedAt };
    }
  }

  async deleteBlob(sha256: string): Promise<void> {
    await this.deleteKey(this.blobKey(sha256));
  }

  /** Staging objects (single PUTs) and unfinished multipart uploads, by upload id. */
  async *listUploads(): AsyncIterable<StagedUpload> {
    const prefix = `${this.o.prefix}uploads/`;
    // Keys a server did not make (not an upload id) are left alone.
    for await (const o of this.listKeys(prefix)) {
      const uploadId = o.key.slice(prefix.length);
      if (UPLOAD_ID.test(uploadId)) yield { uploadId, size: o.size, modifiedAt: o.modifiedAt };
    }
    let KeyMarker: string | undefined;
    let UploadIdMarker: string | undefined;
    for (;;) {
      const r = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.o.bucket, Prefix: prefix, KeyMarker, UploadIdMarker }));
      for (const u of r.Uploads ?? []) {
        const uploadId = u.Key?.slice(prefix.length) ?? "";
        if (UPLOAD_ID.test(uploadId)) yield { uploadId, size: 0, modifiedAt: u.Initiated?.getTime() ?? 0 };
      }
      if (!r.IsTruncated) return;
      KeyMarker = r.NextKeyMarker;
      UploadIdMarker = r.NextUploadIdMarker;
    }
  }

  private async *listKeys(Prefix: string): AsyncIterable<{ key: string; size: number; modifiedAt: number }> {
    let ContinuationToken: string | undefined;
    for (;;) {
      const r = await this.client.send(new ListObjectsV2Command({ Bucket: this.o.bucket, Prefix, ContinuationToken }));
      for (const o of r.Contents ?? []) {
        if (o.Key) yield { key: o.Key, size: o.Size ?? 0, modifiedAt: o.LastModified?.getTime() ?? 0 };
      }
      if (!r.IsTruncated || !r.NextContinuationToken) return;
      ContinuationToken = r.NextContinuationToken;
    }
  }

  private async deleteKey(Key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.o.bucket, Key })).catch(ignore404);
  }
}

/** The parts of a `size`-byte upload: `partSizeBytes` each (grown to stay within 10,000 parts), the last one shorter. */
export function partLayout(size: number, partSizeBytes: number): Array<{ partNumber: number; offset: number; size: number }> {
  const mib = 1024 * 1024;
  const partSize = Math.max(MIN_PART_BYTES, partSizeBytes, Math.ceil(size / MAX_PARTS / mib) * mib);
  const out = [];
  for (let offset = 0, n = 1; offset < size || n === 1; offset += partSize, n++) {
    out.push({ partNumber: n, offset, size: Math.min(partSize, size - offset) });
    if (size === 0) break;
  }
  return out;
}

/** Passes bytes through, hashing and counting them; fails past `maxBytes`. */
class HashingCap extends Transform {
  private readonly h = createHash("sha256");
  private n = 0;
  private readonly maxBytes: number;
  constructor(maxBytes: number) {
    super();
    this.maxBytes = maxBytes;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null, data?: Buffer) => void): void {
    this.n += chunk.length;
    if (this.n > this.maxBytes) return done(new DeltaError("E_TOO_LARGE", `body exceeds ${this.maxBytes} bytes`));
    this.h.update(chunk);
    done(null, chunk);
  }
  info(): BlobInfo {
    return { size: this.n, sha256: this.h.copy().digest("hex") };
  }
}

function notThroughServer(): DeltaError {
  return new DeltaError("E_INVALID", "this server's blob store takes upload bytes directly (presigned URLs): follow the upload descriptor");
}

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
}

function ignore404(err: unknown): void {
  if (statusOf(err) !== 404) throw err;
}
