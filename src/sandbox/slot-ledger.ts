/**
 * What a sandbox factory knows of its slots: which it vouches for (`isSlotClean`), the teardowns
 * still running there in the background (`settle`), and how many of its sandboxes (being built,
 * warm, running or being torn down) each slot holds.
 */
export class SlotLedger {
  /** Slots this factory reaped itself; it has made everything they hold since. */
  private readonly vouched = new Set<number>();
  /** Slots where a teardown failed: something may be left, only a reap makes them clean again. */
  private readonly dirty = new Set<number>();
  private readonly pending = new Map<number, Set<Promise<void>>>();
  private readonly live = new Map<number, number>();
  /** A removal of the slot's own (parent) cgroup in flight: a build waits for it before it starts a container. */
  private readonly emptying = new Map<number, Promise<void>>();

  /** After a successful reap: the slot holds nothing this factory does not know of. */
  vouch(slot: number): void {
    this.vouched.add(slot);
    this.dirty.delete(slot);
  }

  markDirty(slot: number): void {
    this.dirty.add(slot);
  }

  isClean(slot: number): boolean {
    return this.vouched.has(slot) && !this.dirty.has(slot);
  }

  /** A sandbox of the slot is being built; `released` once it is gone. Returns how many the slot holds now. */
  acquire(slot: number): number {
    const n = (this.live.get(slot) ?? 0) + 1;
    this.live.set(slot, n);
    return n;
  }

  /** Returns how many sandboxes the slot still holds. */
  release(slot: number): number {
    const n = Math.max(0, (this.live.get(slot) ?? 0) - 1);
    if (n === 0) this.live.delete(slot);
    else this.live.set(slot, n);
    return n;
  }

  /** Runs `remove` (of the slot's parent cgroup) once the slot holds no sandbox; builds in the slot wait for it (`quiet`). */
  whenEmpty(slot: number, remove: () => Promise<void>): Promise<void> {
    if (this.live.has(slot)) return Promise.resolve();
    const p = remove().catch(() => {}).finally(() => {
      if (this.emptying.get(slot) === p) this.emptying.delete(slot);
    });
    this.emptying.set(slot, p);
    return p;
  }

  /** Resolves once no removal of the slot's parent cgroup is in flight. */
  async quiet(slot: number): Promise<void> {
    await this.emptying.get(slot);
  }

  /** Keeps a background teardown of the slot; a failure marks the slot dirty. Never rejects. */
  track(slot: number, teardown: Promise<void>): void {
    const set = this.pending.get(slot) ?? new Set<Promise<void>>();
    this.pending.set(slot, set);
    const p: Promise<void> = teardown
      .catch(() => this.markDirty(slot))
      .finally(() => {
        set.delete(p);
        if (set.size === 0 && this.pending.get(slot) === set) this.pending.delete(slot);
      });
    set.add(p);
  }

  /** Resolves once every teardown tracked in the slot (also those started while waiting) has ended. */
  async settle(slot: number): Promise<void> {
    for (let set = this.pending.get(slot); set && set.size > 0; set = this.pending.get(slot)) await Promise.all([...set]);
  }

  async settleAll(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending.keys()].map((s) => this.settle(s)));
  }
}
