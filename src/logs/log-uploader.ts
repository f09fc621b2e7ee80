/**
 * Streams the spool to the server: `PUT` chunks (≤ chunkBytes) at offsets, one request at a
 * time, flushing once `flushBytes` wait or `flushIntervalMs` after the previous send. The
 * server's `committed` is the truth: a 416 rewinds to it, resends before it are idempotent, and
 * the sha256 is computed over exactly the committed bytes, in order. Transient failures are
 * retried by the sink (the client's retry policy) until the signal aborts, so no byte is dropped.
 * Stops for good on E_LOG_LIMIT (413), E_LEASE_STALE (409) or any other refusal.
 */
import { createHash, type Hash } from "node:crypto";
import type { Clock } from "../base/clock.ts";
import { isDeltaError } from "../base/errors.ts";
import { RetryPolicy } from "../client/retry-policy.ts";
import type { LogSpool } from "./log-spool.ts";

/**
 * The slice of the protocol client the uploader needs (owned here, STYLE.md 7). `put` retries
 * transient failures a few times (the client's retry policy) and then throws; the uploader then
 * halves its chunk (a path that keeps cutting big requests still lets small ones through) and
 * sends again, for as long as its signal lives.
 */
export interface LogSink {
  put(start: number, bytes: Uint8Array, signal: AbortSignal): Promise<{ status: "accepted" | "gap"; committed: number }>;
}

/** Smallest chunk the uploader shrinks to after transient failures. */
export const MIN_CHUNK_BYTES = 16 * 1024;

export type UploaderStop = "limit" | "stale" | "error" | null;

export interface LogUploaderOptions {
  spool: LogSpool;
  sink: LogSink;
  clock: Clock;
  flushIntervalMs: number;
  flushBytes: number;
  chunkBytes: number;
}

export interface LogSummary {
  bytes: number;
  sha256: string;
}

export class LogUploader {
  private readonly o: LogUploaderOptions;
  private readonly buf: Buffer;
  private committedBytes = 0;
  private hash: Hash = createHash("sha256");
  private hashedTo = 0;
  private lastSendAt = -Infinity;
  private chunkLimit: number;
  private finishing = false;
  private stopReason: UploaderStop = null;
  private stopError: unknown = null;
  private wake: (() => void) | null = null;
  private readonly abort = new AbortController();
  private loop: Promise<void> | null = null;
  private unsubscribe: (() => void) | null = null;

  constructor(opts: LogUploaderOptions) {
    this.o = opts;
    this.buf = Buffer.allocUnsafe(opts.chunkBytes);
    this.chunkLimit = opts.chunkBytes;
  }

  get committed(): number {
    return this.committedBytes;
  }

  get stopped(): UploaderStop {
    return this.stopReason;
  }

  get error(): unknown {
    return this.stopError;
  }

  start(): void {
    if (this.loop) return;
    this.unsubscribe = this.o.spool.onAppend(() => this.poke());
    this.loop = this.run().finally(() => this.unsubscribe?.());
  }

  /**
   * Sends everything the spool holds (the caller stopped appending), bounded by `signal`.
   * Resolves with the summary of what the server holds; `complete` says whether that is all.
   */
  async finish(signal: AbortSignal): Promise<LogSummary & { complete: boolean }> {
    this.finishing = true;
    this.start();
    this.poke();
    const onAbort = () => this.abort.abort(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    if (signal.aborted) onAbort();
    try {
      await this.loop;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
    return { ...this.summary(), complete: this.committedBytes === this.o.spool.size };
  }

  /** After a 412 on complete: the server holds `committed` bytes; send the rest again with `finish`. */
  rewind(committed: number): void {
    this.setCommitted(Math.min(committed, this.o.spool.size));
    this.loop = null;
  }

  /** Stops at once (a stale lease); no further request starts. */
  cancel(reason: unknown): void {
    this.abort.abort(reason);
    this.poke();
  }

  summary(): LogSummary {
    this.hashUpTo(this.committedBytes);
    return { bytes: this.committedBytes, sha256: this.hash.copy().digest("hex") };
  }

  private poke(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private async run(): Promise<void> {
    const { spool, clock } = this.o;
    const signal = this.abort.signal;
    while (!signal.aborted && this.stopReason === null) {
      const pending = spool.size - this.committedBytes;
      if (pending <= 0) {
        if (this.finishing) return;
        await this.waitForPoke();
        continue;
      }
      const dueAt = this.lastSendAt + this.o.flushIntervalMs;
      if (!this.finishing && pending < this.o.flushBytes && clock.now() < dueAt) {
        await this.waitForPoke(dueAt - clock.now());
        continue;
      }
      const start = this.committedBytes;
      const n = await spool.readAt(start, this.buf.subarray(0, this.chunkLimit));
      if (n <= 0) return;
      const chunk = this.buf.subarray(0, n);
      this.lastSendAt = clock.now();
      try {
        const res = await this.o.sink.put(start, chunk, signal);
        this.setCommitted(res.committed);
        this.chunkLimit = Math.min(this.o.chunkBytes, this.chunkLimit * 2);
        if (res.committed > this.hashedTo && res.committed <= start + n) {
          this.hashUpTo(start);
          this.hash.update(chunk.subarray(this.hashedTo - start, res.committed - start));
          this.hashedTo = res.committed;
        }
      } catch (err) {
        if (signal.aborted) return;
        if (RetryPolicy.isTransient(err)) {
          this.chunkLimit = Math.max(MIN_CHUNK_BYTES, Math.floor(this.chunkLimit / 2));
          continue;
        }
        this.stopError = err;
        this.stopReason = isDeltaError(err, "E_LOG_LIMIT") ? "limit" : isDeltaError(err, "E_LEASE_STALE") ? "stale" : "error";
      }
    }
  }

  private setCommitted(committed: number): void {
    if (committed < this.hashedTo) {
      // The server holds less than we hashed (it lost bytes): hash again from the start.
      this.hash = createHash("sha256");
      this.hashedTo = 0;
    }
    this.committedBytes = Math.min(committed, this.o.spool.size);
  }

  /** Brings the hash up to `to` by reading the spool (only when bytes were committed out of order). */
  private hashUpTo(to: number): void {
    // Own scratch buffer: `this.buf` may hold the chunk in flight.
    const scratch = this.hashedTo < to ? Buffer.allocUnsafe(Math.min(1 << 16, to - this.hashedTo)) : null;
    while (scratch && this.hashedTo < to) {
      const n = this.o.spool.readAtSync(this.hashedTo, scratch.subarray(0, Math.min(scratch.length, to - this.hashedTo)));
      if (n <= 0) break;
      this.hash.update(scratch.subarray(0, n));
      this.hashedTo += n;
    }
  }

  /** Waits for an append (or `ms`, through the clock), or the abort. */
  private async waitForPoke(ms?: number): Promise<void> {
    const timer = new AbortController();
    const poked = new Promise<void>((resolve) => {
      this.wake = resolve;
      this.abort.signal.addEventListener("abort", () => resolve(), { once: true, signal: timer.signal });
    });
    const waits = [poked];
    if (ms !== undefined) waits.push(this.o.clock.sleep(Math.max(0, ms), timer.signal).catch(() => {}));
    try {
      await Promise.race(waits);
    } finally {
      timer.abort();
      this.wake = null;
    }
  }
}
