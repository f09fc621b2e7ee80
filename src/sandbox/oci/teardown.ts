/** Removing what a job left on the host; shared by `dispose()` and `reapSlot()`. Every step is idempotent. */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Clock } from "../../base/clock.ts";
import { JobCgroup, removeCgroupTree, type CgroupLayout } from "./cgroups.ts";
import type { CrunCli } from "./crun-cli.ts";
import { detachLoops, removeDir, unmountBelow } from "./job-disk.ts";

export interface TeardownContext {
  crun: CrunCli;
  layout: CgroupLayout;
  clock: Clock;
  nsLevel: number;
}

/** Kills and deletes a container, then its cgroup; returns what was removed. */
export async function removeContainer(ctx: TeardownContext, id: string, cgroupPath: string): Promise<string[]> {
  const removed: string[] = [];
  const cgroup = new JobCgroup(ctx.layout, cgroupPath);
  // `delete -f` kills the init (and with it the pid namespace) and removes the state in one call.
  if (existsSync(join(ctx.crun.stateRoot, id))) {
    const del = await ctx.crun.run(["delete", "-f", id]);
    if (del.code !== 0) await ctx.crun.run(["delete", "-f", id]);
    removed.push(`container ${id}`);
  }
  // With the init gone the pid namespace is gone too; this catches anything that raced into the cgroup.
  const until = ctx.clock.now() + 5_000;
  for (let pids = await cgroup.pids(); pids.length > 0 && ctx.clock.now() < until; pids = await cgroup.pids()) {
    for (const pid of pids) try {
      process.kill(pid, "SIGKILL");
    } catch {}
    await ctx.clock.sleep(5);
  }
  for (const dir of await removeCgroupTree(ctx.layout, cgroupPath)) removed.push(`cgroup ${dir}`);
  return removed;
}

/** Unmounts everything below `dir`, detaches its loop devices and removes it. */
export async function removeJobFiles(dir: string): Promise<string[]> {
  const removed: string[] = [];
  if (!existsSync(dir)) return removed;
  for (const mp of await unmountBelow(dir)) removed.push(`mount ${mp}`);
  for (const dev of await detachLoops(dir)) removed.push(`loop ${dev}`);
  await removeDir(dir);
  return removed;
}
