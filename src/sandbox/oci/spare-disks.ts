/**
 * Spare job dirs (factory option `spareDisks`): as soon as a slot's sandbox is disposed of, its
 * next job dir is made in the background — a pristine disk from the template, mounted, with the
 * workspace and home on it — so that the slot's next build (a prewarm, or a cold create) starts at
 * its container. A spare holds no process and is unreachable
 * from any job: a fresh file system under the slot's work dir (mode 0711) that no container mounts
 * until a build takes it and renames it to its job dir. At most one per slot; `reapSlot` and
 * `close` remove it.
 */
import { rename } from "node:fs/promises";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { jobDirName } from "../job-names.ts";
import type { SandboxLogger, SlotInfo } from "../types.ts";

interface Spare {
  sizeMiB: number;
  dir: string;
  /** Resolves to whether the spare was made (a failed one is removed and forgotten). */
  made: Promise<boolean>;
}

export interface SpareDiskOps {
  /** Makes a job dir `dir` with its disk mounted and its workspace and home ready. */
  make(slot: SlotInfo, sizeMiB: number, dir: string): Promise<void>;
  /** Removes a job dir with whatever is mounted below it. */
  remove(dir: string): Promise<void>;
}

export class SpareDisks {
  private readonly spares = new Map<number, Spare>();

  constructor(
    private readonly ops: SpareDiskOps,
    private readonly logger: SandboxLogger,
  ) {}

  /** Starts making the slot's next job disk, unless the slot has a spare already. */
  prepare(slot: SlotInfo, sizeMiB: number): void {
    if (this.spares.has(slot.index)) return;
    const dir = join(slot.workDir, jobDirName(`spare-${randomBytes(6).toString("hex")}`));
    const made = this.ops.make(slot, sizeMiB, dir).then(
      () => true,
      async (e: unknown) => {
        this.logger.warn({ slot: slot.index, err: e instanceof Error ? e.message : String(e) }, "making a spare job disk failed: the next job makes its own");
        if (this.spares.get(slot.index)?.dir === dir) this.spares.delete(slot.index);
        await this.ops.remove(dir).catch(() => {});
        return false;
      },
    );
    this.spares.set(slot.index, { sizeMiB, dir, made });
  }

  /**
   * Moves the slot's spare to `jobDir` when it has `sizeMiB` (waiting for it if it is being made);
   * returns whether it did. A spare of another size is removed.
   */
  async take(slot: SlotInfo, sizeMiB: number, jobDir: string): Promise<boolean> {
    const spare = this.spares.get(slot.index);
    if (!spare) return false;
    this.spares.delete(slot.index);
    if (!(await spare.made)) return false;
    if (spare.sizeMiB !== sizeMiB) {
      await this.ops.remove(spare.dir);
      return false;
    }
    try {
      await rename(spare.dir, jobDir);
      return true;
    } catch {
      await this.ops.remove(spare.dir).catch(() => {});
      return false;
    }
  }

  /** Removes the slot's spare (waiting for it to be made first). */
  async discard(slotIndex: number): Promise<void> {
    const spare = this.spares.get(slotIndex);
    if (!spare) return;
    this.spares.delete(slotIndex);
    if (await spare.made) await this.ops.remove(spare.dir);
  }

  async discardAll(): Promise<void> {
    await Promise.all([...this.spares.keys()].map((s) => this.discard(s)));
  }
}
