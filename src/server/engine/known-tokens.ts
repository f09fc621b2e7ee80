/**
 * Session and lease token hashes this replica knows to be valid (issued here, or found in the
 * store by an auth hook), with their expiry: the runner routes' auth hooks, which run on every
 * heartbeat and log PUT before the body is read, skip a store read for them. A hint only: the
 * operation itself reads the row in its transaction and answers 401/409 from that. Tokens are
 * removed from the store only with their expired session (`deleteDeadRunners`) or by retention
 * (`deleteJobs`); the collector forgets everything after deleting jobs.
 */

/** Entries kept at most: the least recently added go first. */
const MAX_KNOWN = 20_000;

export class KnownTokens {
  /** Token hash → valid while `now` is before this (ms; Infinity for leases, which the row fences). */
  private readonly until = new Map<string, number>();

  add(hash: string, validUntil: number): void {
    this.until.delete(hash);
    this.until.set(hash, validUntil);
    if (this.until.size > MAX_KNOWN) this.until.delete(this.until.keys().next().value as string);
  }

  valid(hash: string, now: number): boolean {
    const until = this.until.get(hash);
    return until !== undefined && now < until;
  }

  clear(): void {
    this.until.clear();
  }
}
