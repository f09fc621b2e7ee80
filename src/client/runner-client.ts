/**
 * The runner's side of runner protocol v1 (PROTOCOL.md): one method per endpoint, each request
 * under the HTTP transport's hard timeout and the one RetryPolicy. Expected answers are values
 * (204 "no job", 416 "gap", 412 "log incomplete"); protocol refusals throw DeltaError with the
 * server's code (E_LEASE_STALE, E_LOG_LIMIT, E_TOKEN_INVALID, ...).
 */
import { createReadStream, createWriteStream } from "node:fs";
import { pipeline } from "node:stream/promises";
import { DeltaError } from "../base/errors.ts";
import type {
  ArtifactCreateRequest, ArtifactCreateResponse, CompleteRequest, HeartbeatRequest, HeartbeatResponse,
  Lease, RegisterRequest, RegisterResponse,
} from "../protocol/schemas.ts";
import { defaults } from "../config/defaults.ts";
import { uploadDirect } from "./direct-upload.ts";
import type { HttpClient } from "./http.ts";
import type { RetryOptions, RetryPolicy } from "./retry-policy.ts";

export type LogPutResult = { status: "accepted" | "gap"; committed: number };
export type CompleteResult = { status: "accepted" } | { status: "log_incomplete"; committed: number };
export type ArtifactUploadTarget = NonNullable<ArtifactCreateResponse["upload"]>;

export interface RunnerClientOptions {
  http: HttpClient;
  retry: RetryPolicy;
  /** Hard timeout of one request, added on top of any server-side hold (long polls). */
  requestTimeoutMs: number;
  /** Parts sent at once in a direct multipart upload (default: defaults.directUploadConcurrency). */
  directUploadConcurrency?: number;
}

export class RunnerClient {
  private readonly http: HttpClient;
  private readonly retry: RetryPolicy;
  private readonly requestTimeoutMs: number;
  private readonly directUploadConcurrency: number;

  constructor(opts: RunnerClientOptions) {
    this.http = opts.http;
    this.retry = opts.retry;
    this.requestTimeoutMs = opts.requestTimeoutMs;
    this.directUploadConcurrency = opts.directUploadConcurrency ?? defaults.directUploadConcurrency;
  }

  get baseUrl(): string {
    return this.http.baseUrl;
  }

  /** Single attempt on purpose beyond network errors: a registration token works once. */
  async register(registrationToken: string, body: RegisterRequest, opts: RetryOptions = {}): Promise<RegisterResponse> {
    return this.retry.run(async () => (await this.http.call<RegisterResponse>({ method: "POST", path: "/v1/runner/register", token: registrationToken, json: body, signal: opts.signal })).body, opts);
  }

  /** Long poll: a lease, or null when no job came within `waitMs`. */
  async lease(sessionToken: string, waitMs: number, opts: RetryOptions = {}): Promise<Lease | null> {
    return this.retry.run(async () => {
      const res = await this.http.call<{ lease: Lease }>({
        method: "POST", path: "/v1/runner/lease", token: sessionToken, json: { waitMs }, expect: [204],
        timeoutMs: waitMs + this.requestTimeoutMs, signal: opts.signal,
      });
      return res.status === 204 ? null : res.body.lease;
    }, opts);
  }

  /** Renews the lease; with `waitMs` the server holds the call until a cancel or the wait ends. */
  async heartbeat(leaseToken: string, body: HeartbeatRequest, opts: RetryOptions = {}): Promise<HeartbeatResponse> {
    return this.retry.run(async () => (await this.http.call<HeartbeatResponse>({
      method: "POST", path: "/v1/runner/heartbeat", token: leaseToken, json: body,
      timeoutMs: (body.waitMs ?? 0) + this.requestTimeoutMs, signal: opts.signal,
    })).body, opts);
  }

  /** Sends log bytes at `start`. 416 (a gap) is a value carrying the server's `committed`. */
  async putLog(leaseToken: string, start: number, bytes: Uint8Array, opts: RetryOptions = {}): Promise<LogPutResult> {
    if (bytes.length === 0) throw new DeltaError("E_INVALID", "putLog: empty chunk");
    return this.retry.run(async () => {
      const res = await this.http.call<{ committed?: number; error?: { committed?: number } }>({
        method: "PUT", path: "/v1/runner/log", token: leaseToken, body: bytes, expect: [416], signal: opts.signal,
        headers: { "content-type": "application/octet-stream", "content-range": `bytes ${start}-${start + bytes.length - 1}/*` },
      });
      const committed = res.body.committed ?? res.body.error?.committed;
      if (typeof committed !== "number") throw new DeltaError("E_PROTOCOL", `PUT /v1/runner/log: ${res.status} without committed`);
      return { status: res.status === 416 ? "gap" : "accepted", committed };
    }, opts);
  }

  async createArtifact(leaseToken: string, body: ArtifactCreateRequest, opts: RetryOptions = {}): Promise<ArtifactCreateResponse> {
    return this.retry.run(async () => (await this.http.call<ArtifactCreateResponse>({ method: "POST", path: "/v1/runner/artifacts", token: leaseToken, json: body, signal: opts.signal })).body, opts);
  }

  /** How many bytes of an upload the store holds (HEAD → `Upload-Offset`). */
  async artifactOffset(leaseToken: string, target: ArtifactUploadTarget, opts: RetryOptions = {}): Promise<number> {
    return this.retry.run(async () => {
      const res = await this.http.raw({ method: "HEAD", path: target.url, token: leaseToken, signal: opts.signal });
      await res.body.dump();
      const offset = Number(res.headers["upload-offset"]);
      if (!Number.isSafeInteger(offset) || offset < 0) throw new DeltaError("E_PROTOCOL", `HEAD ${target.url}: no Upload-Offset`);
      return offset;
    }, opts);
  }

  /**
   * Uploads a whole file, resumably: after a failed attempt, HEAD tells how much the store holds
   * and the next attempt sends only the rest. Throws on refusals (e.g. 422 E_DIGEST_MISMATCH).
   * A target with a `commitUrl` goes straight to the object store (direct-upload.ts).
   */
  async uploadArtifact(leaseToken: string, target: ArtifactUploadTarget, file: string, size: number, opts: RetryOptions = {}): Promise<void> {
    if (target.commitUrl !== undefined) {
      const deps = { http: this.http, retry: this.retry, requestTimeoutMs: this.requestTimeoutMs, concurrency: this.directUploadConcurrency };
      return uploadDirect(deps, leaseToken, target, { file }, size, opts);
    }
    await this.retry.run(async (attempt) => {
      let offset = 0;
      if (attempt > 0) {
        const res = await this.http.raw({ method: "HEAD", path: target.url, token: leaseToken, signal: opts.signal });
        await res.body.dump();
        offset = Number(res.headers["upload-offset"] ?? 0);
        if (!Number.isSafeInteger(offset) || offset < 0 || offset > size) offset = 0;
        if (offset === size && size > 0) return;
      }
      await this.uploadArtifactRange(leaseToken, target, file, offset, size, opts.signal);
    }, opts);
  }

  /**
   * Sends bytes [start, total) of a file. One attempt: the caller (artifact uploader) resumes
   * through `artifactOffset` under the same retry policy, since a half-sent body moves the offset.
   */
  async uploadArtifactRange(leaseToken: string, target: ArtifactUploadTarget, file: string, start: number, total: number, signal?: AbortSignal): Promise<void> {
    const headers: Record<string, string> = { ...target.headers, "content-type": "application/octet-stream" };
    if (total > 0) headers["content-range"] = `bytes ${start}-${total - 1}/${total}`;
    headers["content-length"] = String(total - start);
    const body = total > 0 ? createReadStream(file, { start, end: total - 1, highWaterMark: 1 << 20 }) : Buffer.alloc(0);
    const timeoutMs = this.requestTimeoutMs + Math.ceil((total - start) / (1 << 20)) * 1000;
    const res = await this.http.raw({ method: target.method, path: target.url, token: leaseToken, body, headers, timeoutMs, signal });
    await res.body.dump();
  }

  /** The job's source archive, written to `dest`. */
  async downloadSource(leaseToken: string, dest: string, opts: RetryOptions = {}): Promise<void> {
    await this.retry.run(async () => {
      const res = await this.http.raw({ method: "GET", path: "/v1/runner/source", token: leaseToken, signal: opts.signal, timeoutMs: this.requestTimeoutMs * 4 });
      await pipeline(res.body, createWriteStream(dest));
    }, opts);
  }

  async complete(leaseToken: string, body: CompleteRequest, opts: RetryOptions = {}): Promise<CompleteResult> {
    return this.finish("/v1/runner/complete", leaseToken, body, opts);
  }

  async cancelAck(leaseToken: string, body: CompleteRequest, opts: RetryOptions = {}): Promise<CompleteResult> {
    return this.finish("/v1/runner/cancel-ack", leaseToken, body, opts);
  }

  private async finish(path: string, leaseToken: string, body: CompleteRequest, opts: RetryOptions): Promise<CompleteResult> {
    return this.retry.run(async () => {
      try {
        await this.http.call({ method: "POST", path, token: leaseToken, json: body, signal: opts.signal });
        return { status: "accepted" } as const;
      } catch (err) {
        if (err instanceof DeltaError && err.code === "E_LOG_INCOMPLETE" && typeof err.details?.committed === "number") {
          return { status: "log_incomplete", committed: err.details.committed } as const;
        }
        throw err;
      }
    }, opts);
  }

  async close(): Promise<void> {
    await this.http.close();
  }

  async destroy(): Promise<void> {
    await this.http.destroy();
  }
}
