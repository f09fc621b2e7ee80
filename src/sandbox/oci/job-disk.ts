/**
 * The per-job disk: a sparse ext4 image of `diskMiB`, loop-mounted (autoclear) on the host. The
 * writable layer and the workspace live on it, so together they cannot exceed the quota.
 */
import { execFile } from "node:child_process";
import { statfs } from "node:fs/promises";
import { mkdir, open, readdir, readFile, rm } from "node:fs/promises";
import { promisify } from "node:util";
import { DeltaError } from "../../base/errors.ts";

const run = promisify(execFile);

export async function createJobDisk(imagePath: string, mountPoint: string, sizeMiB: number): Promise<void> {
  const fh = await open(imagePath, "w", 0o600);
  try {
    await fh.truncate(sizeMiB * 1024 * 1024);
  } finally {
    await fh.close();
  }
  try {
    await run("mkfs.ext4", ["-q", "-F", "-m", "0", "-O", "^has_journal", "-E", "lazy_itable_init=1,nodiscard", imagePath], { timeout: 60_000 });
    await mkdir(mountPoint, { recursive: true, mode: 0o755 });
    await run("mount", ["-t", "ext4", "-o", "loop,nosuid,nodev,noatime", imagePath, mountPoint], { timeout: 60_000 });
  } catch (e) {
    throw new DeltaError("E_SANDBOX", `cannot create the job disk of ${sizeMiB} MiB: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}

/** True when the disk is (nearly) full: fewer than 1% or 256 KiB of blocks, or no inodes left. */
export async function diskFull(mountPoint: string): Promise<boolean> {
  const s = await statfs(mountPoint).catch(() => null);
  if (s === null) return false;
  const freeBytes = s.bavail * s.bsize;
  return freeBytes < Math.max(256 * 1024, (s.blocks * s.bsize) / 100) || s.ffree === 0;
}

/** Mount points at or below `dir` in the host mount table, last mounted first. */
export async function mountsBelow(dir: string): Promise<string[]> {
  const text = await readFile("/proc/self/mountinfo", "utf8");
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const mp = line.split(" ")[4];
    if (mp === undefined) continue;
    const decoded = mp.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (decoded === dir || decoded.startsWith(dir + "/")) out.push(decoded);
  }
  return out.reverse(); // mountinfo lists in mount order: undo it backwards (an overlay before its upper's disk)
}

/** Unmounts everything at or below `dir` (lazily when busy). */
export async function unmountBelow(dir: string): Promise<string[]> {
  const mounts = await mountsBelow(dir);
  for (const mp of mounts) {
    await run("umount", [mp]).catch(() => run("umount", ["-l", mp]).catch(() => {}));
  }
  return mounts;
}

/** Loop devices whose backing file is below `dir` (from sysfs: no process to spawn). */
export async function loopDevicesBelow(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const name of await readdir("/sys/block").catch(() => [])) {
    if (!name.startsWith("loop")) continue;
    const back = (await readFile(`/sys/block/${name}/loop/backing_file`, "utf8").catch(() => "")).trim().replace(/ \(deleted\)$/, "");
    if (back.startsWith(dir + "/")) out.push(`/dev/${name}`);
  }
  return out;
}

export async function detachLoops(dir: string): Promise<string[]> {
  const loops = await loopDevicesBelow(dir);
  for (const dev of loops) await run("losetup", ["-d", dev]).catch(() => {});
  return loops;
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}
