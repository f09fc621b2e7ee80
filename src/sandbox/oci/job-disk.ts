/**
 * The per-job disk: a sparse ext4 image of `diskMiB`, loop-mounted (autoclear) on the host. The
 * writable layer and the workspace live on it, so together they cannot exceed the quota. Each job's
 * image is a fresh copy of a pristine template (disk-template.ts).
 */
import { execFile } from "node:child_process";
import { statfs } from "node:fs/promises";
import { mkdirSync, readdirSync } from "node:fs";
import { rm } from "node:fs/promises";
import { promisify } from "node:util";
import { DeltaError } from "../../base/errors.ts";
import type { HostTool } from "./host-commands.ts";
import { readKernelFile } from "./cgroups.ts";
import type { DiskTemplates } from "./disk-template.ts";

const run = promisify(execFile);

/**
 * Makes the job disk: a new image file written from the pristine template of its size (no mkfs),
 * attached to a free loop device with autoclear and mounted, all by one run of the disk tool.
 * Returns the device.
 */
export async function createJobDisk(templates: DiskTemplates, diskTool: HostTool, imagePath: string, mountPoint: string, sizeMiB: number): Promise<string> {
  try {
    const { pack, runs } = await templates.writeArgs(sizeMiB);
    mkdirSync(mountPoint, { recursive: true, mode: 0o755 });
    const res = await diskTool.run(["write-mount", ...pack, imagePath, mountPoint, ...runs]);
    if (res.code !== 0) throw new Error(`disk-tool write-mount exited ${res.code}: ${res.stderr.trim()}`);
    return res.stdout.trim();
  } catch (e) {
    if (e instanceof DeltaError) throw e;
    throw new DeltaError("E_SANDBOX", `cannot create the job disk of ${sizeMiB} MiB: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}

/**
 * True when the disk is (nearly) full: fewer than 1% or 1 MiB of blocks, or no inodes left. After
 * ENOSPC, ext4 still shows 0.4–0.9 MiB available (delayed allocation's reservations) on 64–256 MiB disks.
 */
export async function diskFull(mountPoint: string): Promise<boolean> {
  const s = await statfs(mountPoint).catch(() => null);
  if (s === null) return false;
  const freeBytes = s.bavail * s.bsize;
  return freeBytes < Math.max(1024 * 1024, (s.blocks * s.bsize) / 100) || s.ffree === 0;
}

/**
 * The mounts at or below `dir` in the host mount table, last mounted first, and the loop devices
 * among their sources (one read of mountinfo; `loopDevicesBelow` reads every loop device instead).
 */
export function mountTableBelow(dir: string): { mounts: string[]; loops: string[] } {
  const mounts: string[] = [];
  const loops = new Set<string>();
  for (const line of readKernelFile("/proc/self/mountinfo").split("\n")) {
    const mp = line.split(" ")[4];
    if (mp === undefined) continue;
    const decoded = mp.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (decoded !== dir && !decoded.startsWith(dir + "/")) continue;
    mounts.push(decoded);
    const sep = line.indexOf(" - ");
    const source = sep < 0 ? "" : (line.slice(sep + 3).split(" ")[1] ?? "");
    if (/^\/dev\/loop\d+$/.test(source)) loops.add(source);
  }
  // mountinfo lists in mount order: undo it backwards (an overlay before its upper's disk)
  return { mounts: mounts.reverse(), loops: [...loops] };
}

/** Mount points at or below `dir` in the host mount table, last mounted first. */
export async function mountsBelow(dir: string): Promise<string[]> {
  return Promise.resolve(mountTableBelow(dir).mounts);
}

/** Unmounts `mounts` (default: everything at or below `dir`), lazily when busy, in one run of the disk tool. */
export async function unmountBelow(diskTool: HostTool, dir: string, mounts?: string[]): Promise<string[]> {
  const list = mounts ?? (await mountsBelow(dir));
  if (list.length > 0) await diskTool.run(["umount", ...list]);
  return list;
}

/** Loop devices whose backing file is below `dir` (from sysfs: no process to spawn). */
export async function loopDevicesBelow(dir: string): Promise<string[]> {
  let names: string[] = [];
  try {
    names = readdirSync("/sys/block").filter((n) => n.startsWith("loop"));
  } catch {}
  return stillBelow(names.map((n) => `/dev/${n}`), dir);
}

/** Those of `devices` whose backing file is (still) below `dir`: one sysfs read per device. */
export async function stillBelow(devices: string[], dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const dev of devices) {
    const name = dev.replace(/^\/dev\//, "");
    const back = readKernelFile(`/sys/block/${name}/loop/backing_file`).trim().replace(/ \(deleted\)$/, "");
    if (back.startsWith(dir + "/")) out.push(dev);
  }
  return out;
}

export async function detachLoops(devices: string[]): Promise<void> {
  for (const dev of devices) await run("losetup", ["-d", dev]).catch(() => {});
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}
