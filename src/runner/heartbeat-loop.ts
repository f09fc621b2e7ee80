/**
 * Keeps a lease alive: heartbeats in a loop, each held by the server as a long poll (waitMs ≤ the
 * interval) so a cancel arrives at once. Reports, once each: a cancel (graceful, then maybe hard),
 * a stale lease (409), or a lost lease (no renewal before the lease would expire).
 *
 * A held call is let go, not aborted, where it can be: an aborted request costs its keep-alive
 * connection (a new one for the next request, on both sides). `wake()` sends the new status
 * beside the held call; `release()` (the report was accepted) sends nothing more. The server
 * answers every held heartbeat of an attempt when the attempt ends, so by the time the run
 * calls `stop()` they have usually returned; `stop()` aborts whatever is still out.
 */
import type { Clock } from "../base/clock.ts";
import { isDeltaError } from "../base/errors.ts";
import { RetryPolicy } from "../client/retry-policy.ts";
import type { CancelMode, HeartbeatRequest } from "../protocol/schemas.ts";
import { deadlineSignal } from "./deadline.ts";
import type { RunnerLogger, RunnerProtocol } from "./ports.ts";

export type LeaseEnd = "stale" | "lost";

export interface HeartbeatLoopOptions {
  client: Pick<RunnerProtocol, "heartbeat">;
  leaseToken: string;
  clock: Clock;
  logger: RunnerLogger;
  ttlMs: number;
  heartbeatIntervalMs: number;
  /** What to report: called before each heartbeat. */
  status: () => Omit<HeartbeatRequest, "waitMs">;
  onCancel: (mode: Exclude<CancelMode, "none">) => void;
  onLeaseEnd: (why: LeaseEnd, err: unknown) => void;
}

/** How long a heartbeat is held while the sandbox is being prepared (steps start right after). */
const PREPARING_HOLD_MS = 250;

/** Server-sent intervals are clamped to sane bounds (STYLE.md 3). */
export function clampInterval(ms: number, ttlMs: number): number {
  return Math.max(100, Math.min(ms, Math.floor(ttlMs / 2), 60_000));
}

export class HeartbeatLoop {
  private readonly o: HeartbeatLoopOptions;
  private readonly ac = new AbortController();
  private running: Promise<void> | null = null;
  private cancelSeen: CancelMode = "none";
  /** Local time by which the lease must be renewed. */
  private expiresAt: number;
  private intervalMs: number;
  /** Stops waiting for the current heartbeat while it is held (or paced) with the status "preparing". */
  private preparingHold: AbortController | null = null;
  /** Aborted by `release()`: no heartbeat is sent after it; a pacing pause ends. */
  private readonly released = new AbortController();
  /** Held calls the loop stopped waiting for (after `wake()`): they end by themselves or at `stop()`. */
  private readonly letGo = new Set<Promise<unknown>>();

  constructor(opts: HeartbeatLoopOptions) {
    this.o = opts;
    this.expiresAt = opts.clock.now() + opts.ttlMs;
    this.intervalMs = clampInterval(opts.heartbeatIntervalMs, opts.ttlMs);
  }

  start(): void {
    this.running ??= this.loop();
  }

  /**
   * The status left "preparing" (the first step started): a heartbeat held while preparing is cut
   * and the new status sent at once, so the job shows running without waiting out the hold.
   */
  wake(): void {
    this.preparingHold?.abort(new Error("status changed"));
  }

  /**
   * The attempt was reported: no more heartbeats (the lease ends with the report). A call still
   * held is left to its answer, which the server sends as the attempt ends; `stop()` follows.
   */
  release(): void {
    this.released.abort(new Error("released"));
  }

  /** Whether `release()` was called. */
  get isReleased(): boolean {
    return this.released.signal.aborted;
  }

  /** Ends the loop; a call still out is aborted. Resolves once no call of the loop is left. */
  async stop(): Promise<void> {
    this.ac.abort(new Error("heartbeat stopped"));
    await this.running;
    await Promise.all(this.letGo);
  }

  private async loop(): Promise<void> {
    const { clock, client } = this.o;
    const signal = this.ac.signal;
    while (!signal.aborted && !this.released.signal.aborted) {
      const sentAt = clock.now();
      // Keep trying while the lease could still be renewed; a hung request is cut at expiry.
      const expiry = deadlineSignal(clock, this.expiresAt - sentAt, signal);
      try {
        const status = this.o.status();
        // While preparing, hold only briefly (and wake() ends the wait), so the switch to running reaches the server at once.
        const hold = status.state === "preparing" ? new AbortController() : null;
        this.preparingHold = hold;
        const holdMs = hold ? PREPARING_HOLD_MS : this.intervalMs;
        const waitMs = Math.floor(Math.max(0, Math.min(holdMs, this.expiresAt - sentAt - this.o.ttlMs / 4)));
        // One held call; if it fails, renew without a hold (retried until expiry) so a healed
        // network renews at once instead of after another hold.
        const call = client.heartbeat(this.o.leaseToken, { ...status, waitMs }, { signal: expiry.signal, maxAttempts: 1 })
          .catch((err: unknown) => {
            if (!RetryPolicy.isTransient(err) || signal.aborted || this.released.signal.aborted) throw err;
            return client.heartbeat(this.o.leaseToken, { ...this.o.status(), waitMs: 0 }, { signal: expiry.signal, deadline: this.expiresAt });
          });
        const res = hold ? await Promise.race([call, untilAborted(hold.signal)]) : await call;
        if (res === null) {
          // Woken: the new status goes now; the held call is let go (answered by the end of its hold).
          const gone: Promise<unknown> = call.catch(() => {}).finally(() => this.letGo.delete(gone));
          this.letGo.add(gone);
          continue;
        }
        if (this.released.signal.aborted) return; // reported: the answer changes nothing
        this.expiresAt = sentAt + this.o.ttlMs;
        this.intervalMs = clampInterval(res.heartbeatIntervalMs, this.o.ttlMs);
        if (res.cancel !== "none" && res.cancel !== this.cancelSeen && this.cancelSeen !== "hard") {
          this.cancelSeen = res.cancel;
          this.o.onCancel(res.cancel);
        }
        // A server that answers at once (no hold) must not make us spin.
        const elapsed = clock.now() - sentAt;
        if (res.cancel === "none" && elapsed < waitMs / 2) {
          await clock.sleep(waitMs - elapsed, AbortSignal.any(hold ? [signal, this.released.signal, hold.signal] : [signal, this.released.signal])).catch(() => {});
        }
      } catch (err) {
        if (signal.aborted || this.released.signal.aborted) return;
        if (this.preparingHold?.signal.aborted) continue; // woken: send the new status now
        const stale = isDeltaError(err, "E_LEASE_STALE");
        this.o.logger.warn({ err: String(err) }, stale ? "lease is stale" : "lease could not be renewed in time");
        this.o.onLeaseEnd(stale ? "stale" : "lost", err);
        return;
      } finally {
        // Always, also when stop() aborted the call: a pending expiry timer would hold the process open.
        expiry.clear();
        this.preparingHold = null;
      }
    }
  }
}

/** Resolves null once `signal` aborts (the listener goes with the signal, local to one heartbeat). */
function untilAborted(signal: AbortSignal): Promise<null> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve(null);
    else signal.addEventListener("abort", () => resolve(null), { once: true });
  });
}
