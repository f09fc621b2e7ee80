/** Time source. Every wait goes through a Clock so tests can control time. */
export interface Clock {
  now(): number;
  /** Resolves after `ms`, or rejects with the signal's reason when aborted. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/**
 * A clock on real timers. With `unref`, its timers never keep the process alive (for code
 * embedded in a command that awaits everything it needs anyway).
 */
export function timerClock(opts: { now?: () => number; unref?: boolean } = {}): Clock {
  return {
    now: opts.now ?? (() => Date.now()),
    sleep: (ms, signal) =>
      new Promise<void>((resolve, reject) => {
        if (signal?.aborted) return reject(signal.reason);
        const onAbort = () => {
          clearTimeout(timer);
          reject(signal?.reason);
        };
        const timer = setTimeout(() => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        }, ms);
        if (opts.unref) timer.unref();
        signal?.addEventListener("abort", onAbort, { once: true });
      }),
  };
}

export const systemClock: Clock = timerClock();

/**
 * The abort reason of a wait that is only called off (a timer cleared): nobody reads it. A bare
 * `abort()` builds a DOMException with its stack each time, several per job on the runner's path.
 */
export const WAIT_CALLED_OFF: Error = Object.freeze(new Error("wait called off"));

/**
 * `p`, or `onTimeout` once `ms` passed, whichever comes first. The timer is cleared either way:
 * a race against a bare `sleep` leaves its timer running, and that kept a stopping `deltaci up`
 * alive for up to 18 s after everything had closed.
 */
export async function within<T, U>(clock: Clock, ms: number, p: Promise<T>, onTimeout: U): Promise<T | U> {
  const timer = new AbortController();
  try {
    return await Promise.race([p, clock.sleep(ms, timer.signal).then(() => onTimeout)]);
  } finally {
    timer.abort(WAIT_CALLED_OFF);
  }
}
