/**
 * Sandboxes built ahead of a job, so that a job's start does not wait for its container. A warm
 * sandbox is built for a shape (slot, image, limits); a job whose spec has the same shape and
 * needs nothing job-specific at build time (no caches, no egress allowlist) takes it, and gets
 * its source extracted into it. A slot runs one job at a time, so when a job of another shape
 * arrives, the slot's warm sandbox is disposed of.
 */
import type { Sandbox, WarmSpec } from "./types.ts";

/**
 * The key a job must match to take a warm sandbox, or null when its spec cannot be prebuilt.
 * Limits sort by code unit: localeCompare would load ICU's collation data (~2 MiB of a runner host's RSS).
 */
export function warmKey(spec: WarmSpec): string | null {
  if (spec.network.egress !== "none" || spec.caches.length > 0) return null;
  const { timeoutMs: _timeout, logMiB: _log, ...limits } = spec.limits;
  const slot = [spec.slot.index, spec.slot.hostUidBase, spec.slot.uidCount, spec.slot.workDir];
  // Code-point order: `localeCompare` loads ICU's collator on first use (~25 ms, on `deltaci run`'s path).
  return JSON.stringify([slot, spec.image, Object.entries(limits).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))]);
}

interface Entry<T> {
  key: string;
  slotIndex: number;
  sandbox: Promise<T | null>;
}

export class WarmPool<T extends Sandbox> {
  private readonly entries: Array<Entry<T>> = [];
  private readonly disposing = new Set<Promise<void>>();

  has(key: string): boolean {
    return this.entries.some((e) => e.key === key);
  }

  /** Keeps a sandbox being built; a failed build resolves to null (the job then builds its own). */
  add(key: string, slotIndex: number, sandbox: Promise<T | null>): void {
    this.entries.push({ key, slotIndex, sandbox });
  }

  /** Takes the warm sandbox for `key`, and disposes of the slot's others (in the background). */
  take(key: string | null, slotIndex: number): Promise<T | null> | null {
    const mine = this.removeSlot(slotIndex);
    const hit = key === null ? undefined : mine.find((e) => e.key === key);
    for (const e of mine) if (e !== hit) void this.dispose(e.sandbox);
    return hit?.sandbox ?? null;
  }

  /** Disposes of a slot's warm sandboxes and waits for it (before the slot is reaped under them). */
  async discardSlot(slotIndex: number): Promise<void> {
    await Promise.all(this.removeSlot(slotIndex).map((e) => this.dispose(e.sandbox)));
  }

  /** Disposes of every warm sandbox nobody took, and waits for those being disposed of. */
  async close(): Promise<void> {
    for (const e of this.entries.splice(0)) void this.dispose(e.sandbox);
    await Promise.all([...this.disposing]);
  }

  private removeSlot(slotIndex: number): Array<Entry<T>> {
    const mine = this.entries.filter((e) => e.slotIndex === slotIndex);
    for (const e of mine) this.entries.splice(this.entries.indexOf(e), 1);
    return mine;
  }

  /** Never rejects; `close()` waits for every disposal started here. */
  private dispose(sandbox: Promise<T | null>): Promise<void> {
    const p: Promise<void> = sandbox.then((sb) => sb?.dispose()).catch(() => {}).finally(() => this.disposing.delete(p));
    this.disposing.add(p);
    return p;
  }
}
