/**
 * Timeout and stop escalation shared by the backends: `terminate()` then, after the grace,
 * `kill()`; the first reason to end a step (timeout or stop) is the one reported.
 */
import { WAIT_CALLED_OFF, type Clock } from "../base/clock.ts";

export interface TreeKiller {
  /** SIGTERM to the step's process tree. */
  terminate(): void;
  /** SIGKILL to the step's process tree. */
  kill(): void;
}

export class StepControl {
  timedOut = false;
  stopped = false;
  private readonly ac = new AbortController();

  constructor(
    private readonly clock: Clock,
    private readonly killer: TreeKiller,
    timeoutMs: number,
    private readonly timeoutGraceMs: number,
  ) {
    if (timeoutMs > 0) this.after(timeoutMs, () => {
      if (this.stopped) return;
      this.timedOut = true;
      this.escalate(this.timeoutGraceMs);
    });
  }

  stop(graceMs: number): void {
    if (this.ac.signal.aborted || this.stopped || this.timedOut) {
      if (graceMs === 0 && !this.ac.signal.aborted) this.killer.kill();
      return;
    }
    this.stopped = true;
    this.escalate(graceMs);
  }

  /** The step is over: cancel pending timers. */
  finish(): void {
    this.ac.abort(WAIT_CALLED_OFF);
  }

  private escalate(graceMs: number): void {
    if (graceMs <= 0) {
      this.killer.kill();
      return;
    }
    this.killer.terminate();
    this.after(graceMs, () => this.killer.kill());
  }

  private after(ms: number, fn: () => void): void {
    this.clock.sleep(ms, this.ac.signal).then(fn, () => {});
  }
}
