/**
 * The job API (PROTOCOL.md "Job API") for people and the CLI: submit, list, status, log
 * (offset reads and follow streams), cancel, artifact download, and source upload.
 * Transport errors come from HttpClient as DeltaError; no retries here except the log
 * follower, which resumes from its offset when a stream breaks.
 */
import { createWriteStream } from "node:fs";
import { rename, rm } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import type { Readable } from "node:stream";
import { createHash } from "node:crypto";
import { systemClock, type Clock } from "../base/clock.ts";
import { defaults } from "../config/defaults.ts";
import { TERMINAL_JOB_STATES, type JobState, type JobStatus, type SourceUploadPlan, type SubmitJobRequest, type SubmitJobResponse } from "../protocol/schemas.ts";
import { uploadDirect } from "./direct-upload.ts";
import { HttpClient } from "./http.ts";
import { RetryPolicy } from "./retry-policy.ts";

export interface JobApiClientOptions {
  server: string;
  token: string | null;
  timeoutMs: number;
}

const enc = encodeURIComponent;
const isTerminalState = (s: JobState) => TERMINAL_JOB_STATES.includes(s);

export class JobApiClient {
  readonly http: HttpClient;
  private readonly token: string | null;
  private readonly timeoutMs: number;

  constructor(opts: JobApiClientOptions) {
    this.http = new HttpClient(opts.server, { timeoutMs: opts.timeoutMs, connections: 32 });
    this.token = opts.token;
    this.timeoutMs = opts.timeoutMs;
  }

  get server(): string {
    return this.http.baseUrl;
  }

  async submit(req: SubmitJobRequest, signal?: AbortSignal): Promise<SubmitJobResponse> {
    return (await this.http.call<SubmitJobResponse>({ method: "POST", path: "/v1/jobs", token: this.token, json: req, ...(signal ? { signal } : {}) })).body;
  }

  async list(signal?: AbortSignal): Promise<JobStatus[]> {
    const body = (await this.http.call<{ jobs: JobStatus[] } | JobStatus[]>({ method: "GET", path: "/v1/jobs", token: this.token, ...(signal ? { signal } : {}) })).body;
    return Array.isArray(body) ? body : body.jobs;
  }

  async status(jobId: string, signal?: AbortSignal): Promise<JobStatus> {
    return (await this.http.call<JobStatus>({ method: "GET", path: `/v1/jobs/${enc(jobId)}`, token: this.token, ...(signal ? { signal } : {}) })).body;
  }

  /** Requests a cancel; `hard` asks the runner to kill at once rather than after the grace period. */
  async cancel(jobId: string, mode: "graceful" | "hard" = "graceful", signal?: AbortSignal): Promise<void> {
    await this.http.call({ method: "POST", path: `/v1/jobs/${enc(jobId)}/cancel`, token: this.token, json: { mode }, ...(signal ? { signal } : {}) });
  }

  /** The log bytes from `offset` on (what the server holds now). */
  async readLog(jobId: string, offset = 0, signal?: AbortSignal, attempt?: number): Promise<Buffer> {
    const query = `offset=${offset}${attempt === undefined ? "" : `&attempt=${attempt}`}`;
    const res = await this.http.raw({ method: "GET", path: `/v1/jobs/${enc(jobId)}/log?${query}`, token: this.token, ...(signal ? { signal } : {}) });
    return Buffer.from(await res.body.arrayBuffer());
  }

  /**
   * Follows one attempt's log (default: the current one) until that attempt ends, calling
   * `onChunk` with each new piece. A broken stream is resumed from the bytes already delivered
   * (nothing is shown twice). Returns the attempt followed and the bytes delivered.
   */
  async followLog(
    jobId: string,
    onChunk: (chunk: Buffer) => void,
    opts: { clock: Clock; attempt?: number; offset?: number; signal?: AbortSignal; retryMs?: number },
  ): Promise<{ attempt: number; bytes: number; status: JobStatus }> {
    let offset = opts.offset ?? 0;
    let attempt = opts.attempt;
    for (let failures = 0; ; ) {
      opts.signal?.throwIfAborted();
      try {
        // A follow stream lives as long as the attempt: no body timeout, only the caller's signal.
        const query = `offset=${offset}&follow=1${attempt === undefined ? "" : `&attempt=${attempt}`}`;
        const res = await this.http.raw({ method: "GET", path: `/v1/jobs/${enc(jobId)}/log?${query}`, token: this.token, timeoutMs: 24 * 3_600_000, ...(opts.signal ? { signal: opts.signal } : {}) });
        attempt ??= Number(res.headers["x-deltaci-attempt"] ?? 1);
        for await (const chunk of res.body as AsyncIterable<Buffer>) {
          offset += chunk.length;
          onChunk(chunk);
        }
        const st = await this.status(jobId, opts.signal);
        const ours = st.attempts.find((a) => a.attempt === attempt);
        const over = (s: string | undefined) => s === undefined || !["queued", "leased", "running", "canceling"].includes(s);
        if (isTerminalState(st.state) || over(ours?.state)) {
          // The stream ended with the attempt; pick up bytes that landed in the tail window.
          const rest = await this.readLog(jobId, offset, opts.signal, attempt);
          if (rest.length > 0) {
            offset += rest.length;
            onChunk(rest);
          }
          return { attempt, bytes: offset, status: st };
        }
      } catch (err) {
        if (opts.signal?.aborted) throw err;
        if (++failures > 20) throw err;
      }
      await opts.clock.sleep(opts.retryMs ?? 200, opts.signal);
    }
  }

  /** Streams an artifact to `file` (written to a temp name, then renamed). */
  async downloadArtifact(jobId: string, name: string, file: string, signal?: AbortSignal): Promise<void> {
    const res = await this.http.raw({ method: "GET", path: `/v1/jobs/${enc(jobId)}/artifacts/${enc(name)}`, token: this.token, timeoutMs: 600_000, ...(signal ? { signal } : {}) });
    const tmp = `${file}.part`;
    try {
      await pipeline(res.body, createWriteStream(tmp, { mode: 0o644 }));
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  /**
   * Uploads a tar archive of a job's source; returns its sha256. A buffer is declared first
   * (`POST /v1/sources/uploads`): nothing is sent when the store holds it, and an object-store
   * server takes it directly (presigned). A stream, or a server without that route, goes through
   * `POST /v1/sources`.
   */
  /**
   * Uploads a source archive. A buffer is declared first (`POST /v1/sources/uploads`: the server
   * may have it already, or take it directly into its blob store); `declare: false` skips that
   * for a server known to have neither (`deltaci run`'s own, fresh, on its disk): one request less.
   */
  async uploadSource(tar: Readable | Buffer, signal?: AbortSignal, opts: { declare?: boolean } = {}): Promise<{ sha256: string }> {
    if (Buffer.isBuffer(tar) && opts.declare !== false) {
      const declared = await this.declareSource(tar, signal);
      if (declared !== undefined) return declared;
    }
    const res = await this.http.call<{ sha256: string }>({
      method: "POST", path: "/v1/sources", token: this.token, body: tar, headers: { "content-type": "application/octet-stream" },
      timeoutMs: 600_000, ...(signal ? { signal } : {}),
    });
    return res.body;
  }

  /** The declared-upload path; undefined when the server has no such route (then POST /v1/sources). */
  private async declareSource(tar: Buffer, signal?: AbortSignal): Promise<{ sha256: string } | undefined> {
    const sha256 = createHash("sha256").update(tar).digest("hex");
    const sig = signal ? { signal } : {};
    const plan = await this.http.call<SourceUploadPlan>({ method: "POST", path: "/v1/sources/uploads", token: this.token, json: { sha256, size: tar.length }, expect: [404], ...sig });
    if (plan.status === 404) return undefined;
    const upload = plan.body.upload;
    if (upload === null) return { sha256 };
    if (upload.commitUrl === undefined) return undefined;
    const deps = { http: this.http, retry: new RetryPolicy({ clock: systemClock }), requestTimeoutMs: this.timeoutMs, concurrency: defaults.directUploadConcurrency };
    await uploadDirect(deps, this.token, upload, { buffer: tar }, tar.length, { maxAttempts: 3, ...sig });
    return { sha256 };
  }

  async close(): Promise<void> {
    await this.http.close();
  }
}
