/**
 * Streams the spool to the server: `PUT` chunks (≤ chunkBytes) at offsets, up to `inFlight`
 * requests at once (each with its own reusable buffer, made on first need and no bigger than the
 * log needs, so a quiet job's uploader holds kilobytes, not `inFlight` × chunkBytes; the server orders them by offset),
 * flushing once `flushBytes` wait or `flushIntervalMs` after the previous send (or the start). The
 * server's `committed` is the truth: a 416 rewinds to it, resends before it are idempotent, and
 * the sha256 is computed over exactly the committed bytes, in order. Transient failures are
 * retried by the sink (the client's retry policy) until the signal aborts, so no byte is dropped.
 * Stops for good on E_LOG_LIMIT (413), E_LEASE_STALE (409) or any other refusal.
 */
import { createHash, type Hash } from "node:crypto";
import { WAIT_CALLED_OFF, type Clock } from "../base/clock.ts";
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

/**
 * Two PUTs in flight: the server commits one while the next is read from the spool and sent,
 * so neither side idles (the server holds an early-arriving PUT until its offset is committed).
 */
export const DEFAULT_PUTS_IN_FLIGHT = 2;

/** Smallest chunk buffer made; buffers grow by powers of two up to chunkBytes as the log does. */
const MIN_BUFFER_BYTES = 64 * 1024;

export type UploaderStop = "limit" | "stale" | "error" | null;

export interface LogUploaderOptions {
  spool: LogSpool;
  sink: LogSink;
  clock: Clock;
  flushIntervalMs: number;
  flushBytes: number;
  chunkBytes: number;
  /** PUTs kept in flight at once (default DEFAULT_PUTS_IN_FLIGHT); the server orders them. */
  inFlight?: number;
}

export interface LogSummary {
  bytes: number;
  sha256: string;
}

export class LogUploader {
  private readonly o: LogUploaderOptions;
  /** Chunk buffers not in flight (at most one per PUT the window allows; made on first need). */
  private readonly free: Buffer[] = [];
  /** PUTs allowed in flight at once. */
  private readonly window: number;
  private committedBytes = 0;
  /** End of what was handed to the sink (≥ committed while PUTs are in flight). */
  private sentTo = 0;
  /** Set by a failed or short PUT: the loop sends again from here. */
  private rewindTo: number | null = null;
  private hash: Hash = createHash("sha256");
  private hashedTo = 0;
  private lastSendAt = -Infinity;
  private chunkLimit: number;
  private finishing = false;
  private stopReason: UploaderStop = null;
  private stopError: unknown = null;
  private wake: (() => void) | null = null;
  /** An append wakes the waiting loop only once the spool reaches this size (see waitForPoke). */
  private wakeAtSize = 0;
  private readonly abort = new AbortController();
  private loop: Promise<void> | null = null;
  private unsubscribe: (() => void) | null = null;

  constructor(opts: LogUploaderOptions) {
    this.o = opts;
    this.window = Math.max(1, opts.inFlight ?? DEFAULT_PUTS_IN_FLIGHT);
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
    // The first flush comes an interval after the start too: a job shorter than that sends its
    // whole log in one PUT with the report (each PUT costs the server a commit), not two.
    if (this.lastSendAt === -Infinity) this.lastSendAt = this.o.clock.now();
    const onAppend = this.o.spool.onAppend(() => {
      if (this.o.spool.size >= this.wakeAtSize) this.poke();
    });
    const onAbort = () => this.poke();
    this.abort.signal.addEventListener("abort", onAbort, { once: true });
    this.unsubscribe = () => {
      onAppend();
      this.abort.signal.removeEventListener("abort", onAbort);
    };
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
    this.sentTo = this.committedBytes;
    this.rewindTo = null;
    this.loop = null;
  }

  /** Stops at once (a stale lease); no further request starts. */
  cancel(reason: unknown): void {
    this.abort.abort(reason);
    this.poke();
  }

  /**
   * Stops at once and resolves when the loop is over: no request in flight, no read of the spool
   * pending (the spool may be closed then). Never rejects.
   */
  async close(reason: unknown): Promise<void> {
    this.cancel(reason);
    await this.loop?.catch(() => {});
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
    const inflight = new Set<Promise<void>>();
    try {
      while (!signal.aborted && this.stopReason === null) {
        if (this.rewindTo !== null) {
          this.sentTo = Math.min(this.sentTo, this.rewindTo);
          this.rewindTo = null;
        }
        // Nothing in flight yet bytes sent but not held (a partial commit): send them again.
        if (inflight.size === 0 && this.sentTo > this.committedBytes) this.sentTo = this.committedBytes;
        const unsent = spool.size - this.sentTo;
        if (unsent <= 0 || inflight.size >= this.window) {
          if (unsent <= 0 && inflight.size === 0 && this.finishing) return;
          // Window full: only a settling PUT can let more go (a flood appends every 64 KiB).
          await this.waitForPoke(undefined, unsent > 0 ? Infinity : 0);
          continue;
        }
        const dueAt = this.lastSendAt + this.o.flushIntervalMs;
        // With a PUT already in flight, the next waits for half a chunk (or the interval): a flood
        // goes in few large PUTs (each costs the server a commit and an fsync), not in many small ones.
        const enough = inflight.size > 0 ? Math.max(this.o.flushBytes, Math.floor(this.chunkLimit / 2)) : this.o.flushBytes;
        if (!this.finishing && unsent < enough && clock.now() < dueAt) {
          await this.waitForPoke(dueAt - clock.now(), this.sentTo + enough);
          continue;
        }
        const start = this.sentTo;
        const want = Math.min(this.chunkLimit, unsent);
        const buf = this.buffer(want);
        // Reserve the range before the read: completions that land meanwhile may rewind `sentTo`.
        this.sentTo = start + want;
        this.lastSendAt = clock.now();
        let n: number;
        try {
          n = await spool.readAt(start, buf.subarray(0, want));
        } catch (err) {
          this.free.push(buf);
          throw err;
        }
        if (n < want) this.rewindTo = Math.min(this.rewindTo ?? Infinity, start + Math.max(0, n));
        if (n <= 0) {
          this.free.push(buf);
          return;
        }
        const sent: Promise<void> = this.send(start, buf.subarray(0, n)).finally(() => {
          inflight.delete(sent);
          this.free.push(buf);
          this.poke();
        });
        inflight.add(sent);
      }
    } finally {
      await Promise.allSettled(inflight);
    }
  }

  /** A free chunk buffer of at least `bytes`; a smaller free one is dropped for a bigger one (powers of two, so a growing log makes a few). */
  private buffer(bytes: number): Buffer {
    const free = this.free.pop();
    if (free !== undefined && free.length >= bytes) return free;
    return Buffer.allocUnsafe(Math.min(this.o.chunkBytes, 2 ** Math.ceil(Math.log2(Math.max(bytes, MIN_BUFFER_BYTES)))));
  }

  /** One PUT; its outcome updates `committed`, the hash, the chunk size, or stops the uploader. */
  private async send(start: number, chunk: Buffer): Promise<void> {
    const signal = this.abort.signal;
    try {
      const res = await this.o.sink.put(start, chunk, signal);
      if (res.status === "gap") {
        // The server holds less than this chunk's start: it is the truth (it may have lost bytes).
        this.setCommitted(res.committed);
        this.rewindTo = Math.min(this.rewindTo ?? Infinity, this.committedBytes);
        return;
      }
      // Answers to overlapping PUTs may arrive out of order: an accepted `committed` only grows.
      if (res.committed > this.committedBytes) this.setCommitted(res.committed);
      this.chunkLimit = Math.min(this.o.chunkBytes, this.chunkLimit * 2);
      const end = Math.min(res.committed, start + chunk.length);
      // an earlier chunk's answer is still on its way: hash its bytes from the spool now, so the hash keeps up
      if (end > start && this.hashedTo < start) this.hashUpTo(start);
      if (end > this.hashedTo && this.hashedTo >= start) {
        this.hash.update(chunk.subarray(this.hashedTo - start, end - start));
        this.hashedTo = end;
      }
    } catch (err) {
      if (signal.aborted || this.stopReason !== null) return;
      if (RetryPolicy.isTransient(err)) {
        this.chunkLimit = Math.max(MIN_CHUNK_BYTES, Math.floor(this.chunkLimit / 2));
        this.rewindTo = Math.min(this.rewindTo ?? Infinity, start);
        return;
      }
      this.stopError = err;
      this.stopReason = isDeltaError(err, "E_LOG_LIMIT") ? "limit" : isDeltaError(err, "E_LEASE_STALE") ? "stale" : "error";
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
    // Own scratch buffer: the chunk buffers may be in flight.
    const scratch = this.hashedTo < to ? Buffer.allocUnsafe(Math.min(1 << 16, to - this.hashedTo)) : null;
    while (scratch && this.hashedTo < to) {
      const n = this.o.spool.readAtSync(this.hashedTo, scratch.subarray(0, Math.min(scratch.length, to - this.hashedTo)));
      if (n <= 0) break;
      this.hash.update(scratch.subarray(0, n));
      this.hashedTo += n;
    }
  }

  /**
   * Waits for a poke (a PUT settling, `cancel`, an append that brings the spool to `wakeAtSize`),
   * or `ms` through the clock, or the abort. No allocation beyond the promise unless a timer is
   * needed.
   */
  private async waitForPoke(ms: number | undefined, wakeAtSize: number): Promise<void> {
    if (this.abort.signal.aborted) return;
    this.wakeAtSize = wakeAtSize;
    const poked = new Promise<void>((resolve) => (this.wake = resolve));
    if (ms === undefined) {
      try {
        await poked;
      } finally {
        this.wake = null;
      }
      return;
    }
    const timer = new AbortController();
    try {
      await Promise.race([poked, this.o.clock.sleep(Math.max(0, ms), timer.signal).catch(() => {})]);
    } finally {
      timer.abort(WAIT_CALLED_OFF);
      this.wake = null;
    }
  }
}
