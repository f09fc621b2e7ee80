/** Runner slots: each owns a disjoint host uid/gid range and a work dir (types.ts `SlotInfo`). */
import { statSync } from "node:fs";
import { dirname, join } from "node:path";
import { DeltaError } from "../base/errors.ts";
import type { SlotInfo } from "./types.ts";

export const SLOT_UID_BASE = 200_000;
export const SLOT_UID_COUNT = 65_536;
/** Highest index whose range still ends below 2^32 - 1 (the invalid uid). */
export const SLOT_MAX_INDEX = Math.floor((0xffff_fffe - SLOT_UID_BASE) / SLOT_UID_COUNT) - 1;

/** Slot `index` → uids [200000 + index*65536, +65536), work dir `<workRoot>/slot-<index>`. */
export function slotInfo(index: number, workRoot: string): SlotInfo {
  if (!Number.isInteger(index) || index < 0 || index > SLOT_MAX_INDEX) {
    throw new DeltaError("E_INVALID", `slot index ${index} out of range 0..${SLOT_MAX_INDEX}`);
  }
  return { index, hostUidBase: SLOT_UID_BASE + index * SLOT_UID_COUNT, uidCount: SLOT_UID_COUNT, workDir: join(workRoot, `slot-${index}`) };
}

/**
 * A sandbox's root maps to an unprivileged uid that must reach its slot's work dir: every
 * directory from `dir` up to `/` must be traversable by others.
 */
export async function assertTraversable(dir: string): Promise<void> {
  assertTraversableSync(dir);
}

/** `assertTraversable`, with a stat per level on this thread (no thread-pool round trip each: a job's create runs it). */
export function assertTraversableSync(dir: string): void {
  for (let d = dir; d !== dirname(d); d = dirname(d)) {
    const st = statSync(d);
    if ((st.mode & 0o001) === 0) throw new DeltaError("E_SANDBOX", `slot work dir ${dir}: ${d} is not traversable by others (mode ${(st.mode & 0o777).toString(8)})`);
  }
}
