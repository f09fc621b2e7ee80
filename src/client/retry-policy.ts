/**
 * The one retry policy of the runner's protocol client (STYLE.md: retries live in one place).
 * Transient failures (network errors, hard timeouts, 5xx, 429) are retried with capped,
 * jittered exponential backoff until the operation succeeds, the signal aborts, or the
 * deadline passes; anything else (4xx with a code) is an answer and is thrown at once.
 */
import { backoffMs } from "../base/backoff.ts";
import type { Clock } from "../base/clock.ts";
import { DeltaError, isDeltaError } from "../base/errors.ts";

export interface RetryOptions {
  signal?: AbortSignal | undefined;
  /** Absolute time (clock ms) after which no new attempt starts; the last error is thrown. */
  deadline?: number | undefined;
  /** At most this many attempts (default: unbounded, only the deadline/signal stop). */
  maxAttempts?: number | undefined;
}

export interface RetryPolicyOptions {
  clock: Clock;
  baseMs?: number;
  maxMs?: number;
  random?: () => number;
  /** Called before each wait, for logging; never for the final failure. */
  onRetry?: (err: unknown, attempt: number, waitMs: number) => void;
}

export class RetryPolicy {
  private readonly clock: Clock;
  private readonly baseMs: number;
  private readonly maxMs: number;
  private readonly random: () => number;
  private readonly onRetry: ((err: unknown, attempt: number, waitMs: number) => void) | undefined;

  constructor(opts: RetryPolicyOptions) {
    this.clock = opts.clock;
    this.baseMs = opts.baseMs ?? 100;
    this.maxMs = opts.maxMs ?? 2_000;
    this.random = opts.random ?? Math.random;
    this.onRetry = opts.onRetry;
  }

  /** True for failures worth another attempt: the request may not have reached a healthy server. */
  static isTransient(err: unknown): boolean {
    if (!isDeltaError(err)) return false;
    if (err.code === "E_NETWORK" || err.code === "E_TIMEOUT" || err.code === "E_UNAVAILABLE") return true;
    const status = typeof err.details?.status === "number" ? err.details.status : 0;
    return status >= 500 || status === 429;
  }

  async run<T>(op: (attempt: number) => Promise<T>, opts: RetryOptions = {}): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      opts.signal?.throwIfAborted();
      try {
        return await op(attempt);
      } catch (err) {
        if (opts.signal?.aborted) throw opts.signal.reason;
        if (!RetryPolicy.isTransient(err)) throw err;
        if (opts.maxAttempts !== undefined && attempt + 1 >= opts.maxAttempts) throw err;
        let waitMs = backoffMs(attempt, this.baseMs, this.maxMs, this.random);
        if (opts.deadline !== undefined) {
          const left = opts.deadline - this.clock.now();
          if (left <= 0) throw err;
          waitMs = Math.min(waitMs, left);
        }
        this.onRetry?.(err, attempt, waitMs);
        await this.clock.sleep(waitMs, opts.signal);
      }
    }
  }
}

/** A stand-in error for "deadline passed before any attempt" cases. */
export function deadlineError(what: string): DeltaError {
  return new DeltaError("E_TIMEOUT", `${what}: deadline passed`);
}
