/**
 * Keeps a lease alive: heartbeats in a loop, each held by the server as a long poll (waitMs ≤ the
 * interval) so a cancel arrives at once. Reports, once each: a cancel (graceful, then maybe hard),
 * a stale lease (409), or a lost lease (no renewal before the lease would expire).
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
  /** Cuts the current heartbeat while it is held (or paced) with the status "preparing". */
  private preparingHold: AbortController | null = null;

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

  async stop(): Promise<void> {
    this.ac.abort();
    await this.running;
  }

  private async loop(): Promise<void> {
    const { clock, client } = this.o;
    const signal = this.ac.signal;
    while (!signal.aborted) {
      const sentAt = clock.now();
      // Keep trying while the lease could still be renewed; a hung request is cut at expiry.
      const expiry = deadlineSignal(clock, this.expiresAt - sentAt, signal);
      try {
        const status = this.o.status();
        // While preparing, hold only briefly (and wake() cuts it), so the switch to running reaches the server at once.
        const hold = status.state === "preparing" ? new AbortController() : null;
        this.preparingHold = hold;
        const holdMs = hold ? PREPARING_HOLD_MS : this.intervalMs;
        const waitMs = Math.floor(Math.max(0, Math.min(holdMs, this.expiresAt - sentAt - this.o.ttlMs / 4)));
        // One held call; if it fails, renew without a hold (retried until expiry) so a healed
        // network renews at once instead of after another hold.
        const held = hold ? AbortSignal.any([expiry.signal, hold.signal]) : expiry.signal;
        const res = await client.heartbeat(this.o.leaseToken, { ...status, waitMs }, { signal: held, maxAttempts: 1 })
          .catch((err: unknown) => {
            if (!RetryPolicy.isTransient(err)) throw err;
            return client.heartbeat(this.o.leaseToken, { ...this.o.status(), waitMs: 0 }, { signal: expiry.signal, deadline: this.expiresAt });
          });
        this.expiresAt = sentAt + this.o.ttlMs;
        this.intervalMs = clampInterval(res.heartbeatIntervalMs, this.o.ttlMs);
        if (res.cancel !== "none" && res.cancel !== this.cancelSeen && this.cancelSeen !== "hard") {
          this.cancelSeen = res.cancel;
          this.o.onCancel(res.cancel);
        }
        // A server that answers at once (no hold) must not make us spin.
        const elapsed = clock.now() - sentAt;
        if (res.cancel === "none" && elapsed < waitMs / 2) await clock.sleep(waitMs - elapsed, hold ? AbortSignal.any([signal, hold.signal]) : signal).catch(() => {});
      } catch (err) {
        if (signal.aborted) return;
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
