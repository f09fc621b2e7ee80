/** Removing what a job left on the host; shared by `dispose()` and `reapSlot()`. Every step is idempotent. */
import { existsSync } from "node:fs";
import { rm, rmdir } from "node:fs/promises";
import { join, posix } from "node:path";
import type { Clock } from "../../base/clock.ts";
import { cgroupDirs, JobCgroup, removeCgroupTree, type CgroupLayout } from "./cgroups.ts";
import type { CrunCli } from "./crun-cli.ts";
import type { HostTool } from "./host-commands.ts";
import { detachLoops, loopDevicesBelow, mountTableBelow, removeDir, stillBelow, unmountBelow } from "./job-disk.ts";

export interface TeardownContext {
  crun: CrunCli;
  layout: CgroupLayout;
  clock: Clock;
  nsLevel: number;
  /** The disk tool (native-tools.ts): unmounts without util-linux. */
  diskTool: HostTool;
}

/**
 * SIGKILLs every process in a cgroup (the init too) until it is empty or `maxMs` passed; returns
 * whether it is empty. Polls fast at first: killed processes are usually gone within a millisecond.
 */
export async function killCgroup(ctx: Pick<TeardownContext, "layout" | "clock">, cgroupPath: string, maxMs = 5_000): Promise<boolean> {
  const cgroup = new JobCgroup(ctx.layout, cgroupPath);
  const until = ctx.clock.now() + maxMs;
  let waitMs = 0;
  for (let pids = await cgroup.pids(); pids.length > 0; pids = await cgroup.pids()) {
    if (ctx.clock.now() >= until) return false;
    for (const pid of pids) try {
      process.kill(pid, "SIGKILL");
    } catch {}
    await ctx.clock.sleep(waitMs);
    waitMs = Math.min(10, waitMs + 1);
  }
  return true;
}

/** Deletes a container (alive or not) with crun, kills what is left in its cgroup and removes the cgroup and the slot's, if empty. */
export async function removeContainer(ctx: TeardownContext, id: string, cgroupPath: string): Promise<string[]> {
  const removed: string[] = [];
  // `delete -f` kills the init (and with it the pid namespace) and removes the state in one call.
  if (existsSync(join(ctx.crun.stateRoot, id))) {
    const del = await ctx.crun.run(["delete", "-f", id]);
    if (del.code !== 0) await ctx.crun.run(["delete", "-f", id]);
    removed.push(`container ${id}`);
  }
  await killCgroup(ctx, cgroupPath);
  for (const dir of await removeCgroupTree(ctx.layout, cgroupPath)) removed.push(`cgroup ${dir}`);
  await removeSlotCgroup(ctx.layout, posix.dirname(cgroupPath));
  return removed;
}

/** Removes a slot's parent cgroup in every hierarchy, where no container of the slot uses it. */
export async function removeSlotCgroup(layout: CgroupLayout, slotCgroupPath: string): Promise<void> {
  for (const dir of cgroupDirs(layout, slotCgroupPath)) await rmdir(dir).catch(() => {});
}

/**
 * What `crun delete` does for a container whose processes are all gone (killCgroup returned true),
 * without running crun: removes its cgroup in every hierarchy and its state dir. Falls back to
 * `crun delete -f` if a cgroup cannot be removed.
 */
export async function forgetContainer(ctx: TeardownContext, id: string, cgroupPath: string): Promise<string[]> {
  const removed = (await removeCgroupTree(ctx.layout, cgroupPath)).map((d) => `cgroup ${d}`);
  if (cgroupDirs(ctx.layout, cgroupPath).some((d) => existsSync(d))) return [...removed, ...(await removeContainer(ctx, id, cgroupPath))];
  const state = join(ctx.crun.stateRoot, id);
  if (existsSync(state)) {
    await rm(state, { recursive: true, force: true });
    removed.push(`container ${id}`);
  }
  return removed;
}

/**
 * Unmounts everything below `dir`, waits for its loop devices to be released (autoclear happens
 * once the last mount namespace holding the file system is gone), detaches stragglers, removes it.
 * `loops`: which loop devices are watched. "scan" (the default) checks every loop device's backing
 * file, for dirs whose maker may have died between attaching and mounting; "mounted" takes those
 * mounted below `dir`, for a job dir whose disk this process mounted and still holds mounted
 * (an autoclear device that was never mounted is gone when its attacher closed it).
 */
export async function removeJobFiles(ctx: Pick<TeardownContext, "clock" | "diskTool">, dir: string, loops: "scan" | "mounted" = "scan"): Promise<string[]> {
  const removed: string[] = [];
  if (!existsSync(dir)) return removed;
  const table = loops === "mounted" ? mountTableBelow(dir) : null;
  const watched = table?.loops ?? (await loopDevicesBelow(dir)); // found once; then only these are watched
  for (const mp of await unmountBelow(ctx.diskTool, dir, table?.mounts)) removed.push(`mount ${mp}`);
  const until = ctx.clock.now() + 3_000;
  let left = await stillBelow(watched, dir);
  for (let waitMs = 2; left.length > 0 && ctx.clock.now() < until; waitMs = Math.min(50, waitMs * 2)) {
    await ctx.clock.sleep(waitMs);
    left = await stillBelow(left, dir);
  }
  await detachLoops(left);
  for (const dev of left) removed.push(`loop ${dev}`);
  await removeDir(dir);
  return removed;
}
