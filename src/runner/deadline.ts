import { WAIT_CALLED_OFF, type Clock } from "../base/clock.ts";
import { DeltaError } from "../base/errors.ts";

/** A signal that aborts after `ms` on `clock` (or with `parent`); call `clear()` when done. */
export function deadlineSignal(clock: Clock, ms: number, parent?: AbortSignal): { signal: AbortSignal; clear: () => void } {
  const timer = new AbortController();
  const cut = new AbortController();
  clock.sleep(Math.max(0, ms), timer.signal).then(() => cut.abort(new DeltaError("E_TIMEOUT", `deadline of ${ms} ms passed`)), () => {});
  const signal = parent ? AbortSignal.any([parent, cut.signal]) : cut.signal;
  return { signal, clear: () => timer.abort(WAIT_CALLED_OFF) };
}
