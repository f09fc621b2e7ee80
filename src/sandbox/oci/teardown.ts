/** Removing what a job left on the host; shared by `dispose()` and `reapSlot()`. Every step is idempotent. */
import { existsSync } from "node:fs";
import { rmdir } from "node:fs/promises";
import { join, posix } from "node:path";
import type { Clock } from "../../base/clock.ts";
import { cgroupDirs, JobCgroup, removeCgroupTree, type CgroupLayout } from "./cgroups.ts";
import type { CrunCli } from "./crun-cli.ts";
import { detachLoops, loopDevicesBelow, removeDir, unmountBelow } from "./job-disk.ts";

export interface TeardownContext {
  crun: CrunCli;
  layout: CgroupLayout;
  clock: Clock;
  nsLevel: number;
}

/** SIGKILLs every process in a cgroup (the init too) until it is empty or `maxMs` passed. */
export async function killCgroup(ctx: TeardownContext, cgroupPath: string, maxMs = 5_000): Promise<void> {
  const cgroup = new JobCgroup(ctx.layout, cgroupPath);
  const until = ctx.clock.now() + maxMs;
  for (let pids = await cgroup.pids(); pids.length > 0 && ctx.clock.now() < until; pids = await cgroup.pids()) {
    for (const pid of pids) try {
      process.kill(pid, "SIGKILL");
    } catch {}
    await ctx.clock.sleep(5);
  }
}

/** Deletes a container, kills what is left in its cgroup and removes the cgroup; returns what was removed. */
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
  // the slot's parent cgroup too, when no other container of the slot uses it
  for (const dir of cgroupDirs(ctx.layout, posix.dirname(cgroupPath))) await rmdir(dir).catch(() => {});
  return removed;
}

/**
 * Unmounts everything below `dir`, waits for its loop devices to be released (autoclear happens
 * once the last mount namespace holding the file system is gone), detaches stragglers, removes it.
 */
export async function removeJobFiles(ctx: Pick<TeardownContext, "clock">, dir: string): Promise<string[]> {
  const removed: string[] = [];
  if (!existsSync(dir)) return removed;
  for (const mp of await unmountBelow(dir)) removed.push(`mount ${mp}`);
  const until = ctx.clock.now() + 3_000;
  let loops = await loopDevicesBelow(dir);
  while (loops.length > 0 && ctx.clock.now() < until) {
    await ctx.clock.sleep(10);
    loops = await loopDevicesBelow(dir);
  }
  for (const dev of await detachLoops(dir)) removed.push(`loop ${dev}`);
  await removeDir(dir);
  return removed;
}
