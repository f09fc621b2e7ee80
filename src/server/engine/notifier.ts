/** In-process wake-ups for long polls (lease, heartbeat, log follow, demand): no DB polling. */
import type { Clock } from "../../base/clock.ts";

export class Notifier {
  private readonly listeners = new Map<string, Set<() => void>>();

  on(key: string, fn: () => void): () => void {
    let set = this.listeners.get(key);
    if (!set) {
      set = new Set();
      this.listeners.set(key, set);
    }
    set.add(fn);
    return () => {
      const s = this.listeners.get(key);
      if (!s) return;
      s.delete(fn);
      if (s.size === 0) this.listeners.delete(key);
    };
  }

  emit(key: string): void {
    const set = this.listeners.get(key);
    if (!set) return;
    for (const fn of [...set]) fn();
  }

  /** Wakes every listener (after a replica feed reconnects: anything may have changed). */
  emitAll(): void {
    for (const set of [...this.listeners.values()]) for (const fn of [...set]) fn();
  }

  /** Resolves true when any key fires, false after `ms` or when `signal` aborts. */
  async wait(keys: string[], ms: number, clock: Clock, signal?: AbortSignal): Promise<boolean> {
    const armed = this.arm(keys);
    try {
      return await armed.wait(ms, clock, signal);
    } finally {
      armed.off();
    }
  }

  /**
   * Listens to `keys` from now on: arm before reading the state a wait depends on, then wait.
   * A wake that fires between the read and the wait (a commit while the read's round trip was
   * out: PostgreSQL) is kept, and the wait returns at once; subscribing after the read would
   * miss it and sleep the whole wait. `off()` when done (a `finally`).
   */
  arm(keys: string[]): ArmedWait {
    const stop = new AbortController();
    let fired = false;
    const offs = keys.map((k) =>
      this.on(k, () => {
        fired = true;
        stop.abort();
      }),
    );
    return {
      wait: async (ms, clock, signal) => {
        if (fired) return true;
        if (ms <= 0 || signal?.aborted) return false;
        const onAbort = () => stop.abort();
        signal?.addEventListener("abort", onAbort, { once: true });
        try {
          await clock.sleep(ms, stop.signal).catch(() => undefined);
        } finally {
          signal?.removeEventListener("abort", onAbort);
        }
        return fired;
      },
      off: () => {
        for (const off of offs) off();
      },
    };
  }

  get size(): number {
    let n = 0;
    for (const s of this.listeners.values()) n += s.size;
    return n;
  }
}

/** A subscription made ahead of the wait (Notifier.arm). */
export interface ArmedWait {
  /** True at once if a key fired since `arm`; else as `Notifier.wait`. Once per arm. */
  wait(ms: number, clock: Clock, signal?: AbortSignal): Promise<boolean>;
  off(): void;
}

export const keys = {
  job: (jobId: string) => `job:${jobId}`,
  log: (jobId: string) => `log:${jobId}`,
  cancel: (jobId: string, attempt: number) => `cancel:${jobId}:${attempt}`,
  demand: "demand",
  /** A job was queued that no runner of the replica that queued it took (replicas only). */
  queued: "queued",
  shutdown: "shutdown",
} as const;
