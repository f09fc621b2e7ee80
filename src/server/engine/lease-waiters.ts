/** Runners waiting in a lease long poll, oldest first. Claims happen inside store transactions. */
import type { Capabilities, Lease } from "../../protocol/schemas.ts";

export interface LeaseWaiter {
  runnerId: string;
  caps: Capabilities;
  /** Answers the held request: a lease, or null for "no job" (204). */
  settle(lease: Lease | null): void;
}

export class LeaseWaiters {
  private readonly byRunner = new Map<string, LeaseWaiter>();

  /** A runner waits at most once: an older wait of the same runner is answered "no job". */
  add(w: LeaseWaiter): void {
    const old = this.byRunner.get(w.runnerId);
    if (old) {
      this.byRunner.delete(w.runnerId);
      old.settle(null);
    }
    this.byRunner.set(w.runnerId, w);
  }

  remove(w: LeaseWaiter): boolean {
    if (this.byRunner.get(w.runnerId) !== w) return false;
    this.byRunner.delete(w.runnerId);
    return true;
  }

  /** Oldest first. */
  list(): LeaseWaiter[] {
    return [...this.byRunner.values()];
  }

  get size(): number {
    return this.byRunner.size;
  }

  /** Answers every waiter "no job" (shutdown). */
  drain(): void {
    const all = this.list();
    this.byRunner.clear();
    for (const w of all) w.settle(null);
  }
}
