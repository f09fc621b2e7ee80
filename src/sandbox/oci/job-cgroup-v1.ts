/**
 * A job container's cgroup on a cgroup v1 (or hybrid) host, made by the host instead of crun: the
 * directory in every hierarchy and the bundle's limits written, as crun 1.8's cgroupfs manager
 * does. The spawner's child for `crun run` joins it before its exec and crun runs with
 * `--cgroup-manager=disabled`: crun then makes, writes and joins no cgroup (about 4 ms of its CPU
 * per start here), and writes no device rules, so this module writes them (see docs/sandbox.md,
 * "Job cgroups on v1, made by the host"). Files are written synchronously: each is one cheap
 * syscall into the kernel, where a thread-pool round trip would cost more.
 */
import { closeSync, mkdirSync, openSync, writeFileSync, writeSync } from "node:fs";
import { join, posix } from "node:path";
import type { JobResources } from "./bundle.ts";
import { readKernelFile, type CgroupLayout } from "./cgroups.ts";

/**
 * The device rules crun 1.8.1 leaves in a v1 job cgroup whose bundle denies every device (read
 * back from `devices.list` of a crun-made cgroup): mknod of any node (opening one is what is
 * guarded), and read/write/mknod of null, random, full, tty, zero, urandom, console, the pts and ptmx.
 */
export const V1_DEVICE_ALLOW = ["c *:* m", "b *:* m", "c 1:3 rwm", "c 1:8 rwm", "c 1:7 rwm", "c 5:0 rwm", "c 1:5 rwm", "c 1:9 rwm", "c 5:1 rwm", "c 136:* rwm", "c 5:2 rwm"] as const;

type V1Layout = Extract<CgroupLayout, { kind: "v1" }>;

/** A job cgroup made by `makeJobCgroupV1`: what crun's process joins, and the limit left for after its start. */
export interface MadeJobCgroup {
  /** The `cgroup.procs` file of the job's cgroup in every hierarchy. */
  procsFiles: string[];
  /** Writes the CPU quota: after crun has started the container, whose start is then not throttled; before any step. */
  applyCpuQuota(): void;
}

/**
 * Makes the job cgroup `path` (e.g. `/deltaci/slot-3/deltaci-s3-ab12`) in every v1 hierarchy, with
 * its parents (a cpuset dir gets its parent's cpus and mems, as crun does), and writes the memory,
 * pids and device limits. Throws when a directory or a limit cannot be written.
 */
export function makeJobCgroupV1(layout: V1Layout, path: string, resources: JobResources): MadeJobCgroup {
  const mounts = [...new Set(layout.controllers.values())];
  const firstMade = new Map(mounts.map((m) => [m, mkdirSync(join(m, path), { recursive: true, mode: 0o755 })]));
  const dir = (controller: string): string | null => {
    const mount = layout.controllers.get(controller);
    return mount === undefined ? null : join(mount, path);
  };
  const cpuset = layout.controllers.get("cpuset");
  if (cpuset !== undefined) inheritCpuset(cpuset, path, firstMade.get(cpuset));
  const memory = dir("memory");
  if (memory !== null) writeFileSync(join(memory, "memory.limit_in_bytes"), String(resources.memory.limit));
  const pids = dir("pids");
  if (pids !== null) writeFileSync(join(pids, "pids.max"), String(resources.pids.limit));
  const devices = dir("devices");
  if (devices !== null) {
    if (!resources.devices.every((d) => !d.allow && d.access === "rwm")) throw new Error("only a deny-all device list is supported");
    writeFileSync(join(devices, "devices.deny"), "a");
    const allow = openSync(join(devices, "devices.allow"), "w");
    try {
      for (const rule of V1_DEVICE_ALLOW) writeSync(allow, rule); // one rule per write(2)
    } finally {
      closeSync(allow);
    }
  }
  const cpu = dir("cpu");
  return {
    procsFiles: mounts.map((m) => join(m, path, "cgroup.procs")),
    applyCpuQuota: () => {
      if (cpu === null) return;
      writeFileSync(join(cpu, "cpu.cfs_period_us"), String(resources.cpu.period));
      writeFileSync(join(cpu, "cpu.cfs_quota_us"), String(resources.cpu.quota));
    },
  };
}

/**
 * A new cpuset cgroup has no cpus and no mems (no process may join it): each level made now
 * (from `firstMade` down; every level when none was made now: a dir left by an earlier attempt) gets its parent's, as crun does.
 */
function inheritCpuset(mount: string, path: string, firstMade: string | undefined): void {
  let parent = mount;
  for (const part of path.split(posix.sep).filter((p) => p !== "")) {
    const here = join(parent, part);
    if (firstMade === undefined || here.length >= firstMade.length) {
      for (const file of ["cpuset.cpus", "cpuset.mems"]) {
        if (readKernelFile(join(here, file)).trim() === "") writeFileSync(join(here, file), readKernelFile(join(parent, file)).trim());
      }
    }
    parent = here;
  }
}
