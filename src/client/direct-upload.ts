/**
 * Direct uploads (docs/protocol.md, "Direct uploads"): the bytes go to presigned object-store
 * URLs, never with the server's token, then one POST to the server's commit URL makes the server
 * verify size and sha256 and commit. Multipart parts go `concurrency` at a time, each retried
 * under the one RetryPolicy; a part that keeps failing (an expired URL: 403) fails the upload,
 * and the caller asks for a fresh descriptor, which lists only the parts still missing.
 */
import { createReadStream } from "node:fs";
import { DeltaError } from "../base/errors.ts";
import type { ArtifactUpload } from "../protocol/schemas.ts";
import type { HttpClient } from "./http.ts";
import type { RetryOptions, RetryPolicy } from "./retry-policy.ts";

export interface DirectUploadDeps {
  http: HttpClient;
  retry: RetryPolicy;
  requestTimeoutMs: number;
  concurrency: number;
}

const MiB = 1024 * 1024;

/** A budget for sending `bytes`: the base timeout plus one second per MiB (a floor of 1 MiB/s). */
const sendTimeoutMs = (deps: DirectUploadDeps, bytes: number) => deps.requestTimeoutMs + Math.ceil(bytes / MiB) * 1000;

/** The bytes to send: a file (artifacts, streamed per range) or a buffer (source archives). */
export type UploadBytes = { file: string } | { buffer: Buffer };

function rangeOf(bytes: UploadBytes, offset: number, length: number): Buffer | NodeJS.ReadableStream {
  if ("buffer" in bytes) return bytes.buffer.subarray(offset, offset + length);
  return length > 0 ? createReadStream(bytes.file, { start: offset, end: offset + length - 1, highWaterMark: MiB }) : Buffer.alloc(0);
}

/** Sends `bytes` (`size` long) as `target` describes, then POSTs its commit URL with `token`. */
export async function uploadDirect(
  deps: DirectUploadDeps, token: string | null, target: ArtifactUpload, bytes: UploadBytes, size: number, opts: RetryOptions = {},
): Promise<void> {
  await sendDirect(deps, target, bytes, size, opts);
  await commitDirect(deps, token, target, size, opts);
}

/** The bytes only: one presigned PUT, or the parts `concurrency` at a time. */
export async function sendDirect(deps: DirectUploadDeps, target: ArtifactUpload, bytes: UploadBytes, size: number, opts: RetryOptions = {}): Promise<void> {
  if (target.parts === undefined) return putRange(deps, target.url, target.headers, bytes, 0, size, opts);
  const queue = [...target.parts];
  const worker = async () => {
    try {
      for (let p = queue.shift(); p !== undefined; p = queue.shift()) await putRange(deps, p.url, {}, bytes, p.offset, p.size, opts);
    } catch (e) {
      queue.length = 0;
      throw e;
    }
  };
  // A failed part stops new parts but lets those in flight land, so the next descriptor asks only for what is really missing.
  const settled = await Promise.allSettled(Array.from({ length: Math.max(1, Math.min(deps.concurrency, queue.length)) }, worker));
  const failed = settled.find((r) => r.status === "rejected");
  if (failed) throw failed.reason;
}

/** The commit: the server reads the bytes back to verify them, so its answer takes time in proportion to the size (≥ 5 MiB/s assumed). */
export async function commitDirect(deps: DirectUploadDeps, token: string | null, target: ArtifactUpload, size: number, opts: RetryOptions = {}): Promise<void> {
  const commitUrl = target.commitUrl;
  if (commitUrl === undefined) throw new DeltaError("E_PROTOCOL", "a direct upload needs a commitUrl");
  const timeoutMs = deps.requestTimeoutMs + Math.ceil(size / MiB) * 200;
  await deps.retry.run(async () => {
    await deps.http.call({ method: "POST", path: commitUrl, token, timeoutMs, signal: opts.signal });
  }, opts);
}

/** PUTs bytes [offset, offset + length) to an absolute presigned URL (no token). */
async function putRange(
  deps: DirectUploadDeps, url: string, headers: Record<string, string>, bytes: UploadBytes, offset: number, length: number, opts: RetryOptions,
): Promise<void> {
  if (!/^https?:\/\//.test(url)) throw new DeltaError("E_PROTOCOL", "a direct upload url must be absolute");
  await deps.retry.run(async () => {
    const body = rangeOf(bytes, offset, length);
    const res = await deps.http.raw({
      method: "PUT", path: url, body, headers: { ...headers, "content-length": String(length) }, timeoutMs: sendTimeoutMs(deps, length), signal: opts.signal,
    });
    await res.body.dump();
  }, opts);
}
