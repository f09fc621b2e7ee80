/**
 * Running sha256 of each live attempt's committed log, fed by appends after they commit, so the
 * digest check at `complete` costs nothing instead of re-reading the whole log inside the write
 * batch. Memory only: after a restart (or any doubt) the caller reads the log from the store.
 */
import { createHash, type Hash } from "node:crypto";

interface Running {
  bytes: number;
  hash: Hash;
}

/** Attempts tracked at most (lost attempts never ask for their digest): the oldest go first. */
const MAX_TRACKED = 10_000;

export class LogDigests {
  private readonly byAttempt = new Map<string, Running>();

  /** Bytes `[start, start + length of parts)` of an attempt's log were committed. */
  appended(jobId: string, attempt: number, start: number, parts: readonly Uint8Array[]): void {
    const key = `${jobId}/${attempt}`;
    let r = this.byAttempt.get(key);
    if (!r && start === 0) {
      r = { bytes: 0, hash: createHash("sha256") };
      this.byAttempt.set(key, r);
      if (this.byAttempt.size > MAX_TRACKED) this.byAttempt.delete(this.byAttempt.keys().next().value as string);
    }
    if (!r) return;
    if (r.bytes !== start) {
      // Out of step (a restart in between, a rewind): forget it, the store is the truth.
      this.byAttempt.delete(key);
      return;
    }
    for (const p of parts) {
      r.hash.update(p);
      r.bytes += p.length;
    }
  }

  /** The digest when it covers exactly `bytes`, else null. */
  digest(jobId: string, attempt: number, bytes: number): string | null {
    const r = this.byAttempt.get(`${jobId}/${attempt}`);
    return r && r.bytes === bytes ? r.hash.copy().digest("hex") : null;
  }
}
