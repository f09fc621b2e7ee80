/** What a sandbox may leave on the host, looked up for "nothing left behind" assertions. */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";

export const crunIds = (prefix: string): string[] =>
  execFileSync("crun", ["--root", "/run/deltaci/crun", "list", "-q"], { encoding: "utf8" }).split("\n").filter((l) => l.startsWith(prefix));

export const mountsUnder = (dir: string): string[] =>
  readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter((l) => l.split(" ")[4]?.startsWith(dir));

export const loopsUnder = (dir: string): string[] =>
  execFileSync("losetup", ["-l", "-n", "-O", "NAME,BACK-FILE"], { encoding: "utf8" }).split("\n").filter((l) => l.includes(dir));

/** Non-empty cgroup dirs of a slot, in every hierarchy. */
export const cgroupDirs = (slot: number): string[] =>
  ["memory", "pids", "cpu", "cpuacct", "blkio", "freezer", "devices", "cpuset", "unified", ""].map((c) => `/sys/fs/cgroup/${c}/deltaci/slot-${slot}`.replace("//", "/")).filter((d) => existsSync(d) && childDirs(d).length > 0);

function childDirs(d: string): string[] {
  try {
    return execFileSync("find", [d, "-mindepth", "1", "-type", "d"], { encoding: "utf8" }).split("\n").filter(Boolean);
  } catch {
    return [];
  }
}
