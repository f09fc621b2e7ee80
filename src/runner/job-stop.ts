/**
 * The stop cause of one job run: the only state that the heartbeat, the runner's stop signal and
 * the log's limit share with the phases. Sources `raise` causes; the run keeps the strongest
 * (stop-cause.ts); a phase reads `cause` or takes a signal derived from it (`signalWhen`) and
 * releases it when the phase ends, so nothing stays subscribed after the run.
 */
import { strongerCause, sameCause, type StopCause } from "./stop-cause.ts";

export type StopListener = (raised: StopCause) => void;

export interface HeldSignal {
  signal: AbortSignal;
  /** Drops the subscription (idempotent). */
  release(): void;
}

export class JobStop {
  private kept: StopCause | null = null;
  /** Every distinct cause raised so far (a full log is raised on every append; heard once). */
  private readonly raised: StopCause[] = [];
  private reporting = false;
  private readonly listeners = new Set<StopListener>();

  /** The strongest cause so far, or null while nothing asked the run to stop. */
  get cause(): StopCause | null {
    return this.kept;
  }

  /** Records a cause. Listeners hear each distinct cause once, also one weaker than the kept one. */
  raise(cause: StopCause): void {
    if (this.raised.some((c) => sameCause(c, cause))) return;
    this.raised.push(cause);
    this.kept = strongerCause(this.kept, cause, this.reporting);
    for (const l of [...this.listeners]) l(cause);
  }

  /** The report started: from now on a lease end no longer changes the cause (listeners still hear it). */
  startReporting(): void {
    this.reporting = true;
  }

  onRaise(listener: StopListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** A signal aborted once a cause matching `pred` has been raised (already, or later). */
  signalWhen(pred: (c: StopCause) => boolean, what: string): HeldSignal {
    const ac = new AbortController();
    const hit = this.raised.find(pred);
    if (hit) {
      ac.abort(new Error(`${what}: ${describeCause(hit)}`));
      return { signal: ac.signal, release: () => {} };
    }
    const off = this.onRaise((c) => {
      if (!pred(c)) return;
      off();
      ac.abort(new Error(`${what}: ${describeCause(c)}`));
    });
    return { signal: ac.signal, release: off };
  }
}

export function describeCause(c: StopCause): string {
  switch (c.kind) {
    case "cancel": return `canceled (${c.mode})`;
    case "lease_ended": return `lease ${c.why}`;
    case "runner_stopping": return "runner stopping";
    case "log_limit": return "log limit reached";
  }
}
