/**
 * Cgroup layout detection and the per-job cgroup: its processes (for killing a step's tree) and
 * the counters that prove a limit was hit (OOM kills, refused forks). Works on v1, v2 and hybrid;
 * `assertCgroupSupport` refuses, with a clear reason, a host where the job limits cannot work.
 */
import { readdirSync, readFileSync, type Dirent } from "node:fs";
import { readFile, rmdir } from "node:fs/promises";
import { join } from "node:path";
import { DeltaError } from "../../base/errors.ts";

export type CgroupLayout =
  | { kind: "v1"; /** controller name → mount point */ controllers: Map<string, string>; /** the cgroup2 mount of a hybrid host, which crun 1.8 refuses */ hybridUnified: string | null }
  | { kind: "v2"; root: string };

/** Detects the layout from /proc/self/mountinfo. */
export function detectCgroupLayout(mountinfo = readFileSync("/proc/self/mountinfo", "utf8")): CgroupLayout {
  const v1 = new Map<string, string>();
  let v2: string | null = null;
  for (const line of mountinfo.split("\n")) {
    const [pre, post] = line.split(" - ");
    if (!pre || !post) continue;
    const mountPoint = pre.split(" ")[4] ?? "";
    const [fstype, , superOpts = ""] = post.split(" ");
    if (fstype === "cgroup2") v2 ??= mountPoint;
    if (fstype === "cgroup") {
      for (const opt of superOpts.split(",")) {
        if (["rw", "ro", "relatime", "noexec", "nosuid", "nodev", "clone_children", "xattr"].includes(opt) || opt.startsWith("release_agent")) continue;
        v1.set(opt, mountPoint);
      }
    }
  }
  if (v1.size > 0) return { kind: "v1", controllers: v1, hybridUnified: v2 };
  if (v2 !== null) return { kind: "v2", root: v2 };
  throw new Error("no cgroup file system mounted");
}

export interface LimitCounters {
  oomKills: number;
  pidsMax: number;
}

function counter(text: string, key: string): number {
  const m = new RegExp(`^${key} (\\d+)$`, "m").exec(text);
  return m ? Number(m[1]) : 0;
}

/** A cgroup path (as in the OCI `linux.cgroupsPath`) seen through a layout. */
export class JobCgroup {
  constructor(
    private readonly layout: CgroupLayout,
    /** Absolute cgroup path, e.g. `/deltaci/slot-3/deltaci-s3-ab12`. */
    readonly path: string,
  ) {}

  private dirOf(controller: string): string | null {
    if (this.layout.kind === "v2") return join(this.layout.root, this.path);
    const mount = this.layout.controllers.get(controller);
    return mount === undefined ? null : join(mount, this.path);
  }

  /** Host pids of every process in the job's cgroup. */
  pids(): Promise<number[]> {
    return Promise.resolve(this.pidsNow());
  }

  /** The same, read synchronously (one small kernel file: no disk wait). */
  pidsNow(): number[] {
    const dir = this.dirOf("pids") ?? this.dirOf("memory") ?? this.dirOf("freezer");
    if (dir === null) return [];
    return readKernelFile(join(dir, "cgroup.procs")).split("\n").filter((l) => l !== "").map(Number);
  }

  counters(): Promise<LimitCounters> {
    return Promise.resolve(this.countersNow());
  }

  /** The same, read synchronously (two small kernel files). */
  countersNow(): LimitCounters {
    const mem = this.dirOf("memory");
    const pids = this.dirOf("pids");
    const read = (dir: string | null, file: string) => (dir === null ? "" : readKernelFile(join(dir, file)));
    const m = read(mem, this.layout.kind === "v2" ? "memory.events" : "memory.oom_control");
    return { oomKills: counter(m, "oom_kill"), pidsMax: counter(read(pids, "pids.events"), "max") };
  }

  /** Removes the job's cgroup directories (crun may leave empty ones behind). */
  async remove(): Promise<void> {
    await removeCgroupTree(this.layout, this.path);
  }
}

/**
 * A small cgroup, sysfs or proc file, read synchronously ("" when missing): such reads never block
 * on disk, and an async read costs four thread-pool round trips (open, fstat, read, close).
 */
export function readKernelFile(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

/** All directories of a cgroup path in every hierarchy. */
export function cgroupDirs(layout: CgroupLayout, path: string): string[] {
  if (layout.kind === "v2") return [join(layout.root, path)];
  return [...new Set(layout.controllers.values())].map((m) => join(m, path));
}

/** Removes a cgroup path and everything below it, deepest first; processes must be gone. */
export async function removeCgroupTree(layout: CgroupLayout, path: string): Promise<string[]> {
  const removed: string[] = [];
  // A job's cgroup rarely has children: its rmdir is tried first, and the dir listed only when
  // that fails. (The rmdir stays off this thread: the kernel's part can take a millisecond.)
  const visit = async (dir: string): Promise<void> => {
    if ((await tryRmdir(dir)) !== "busy") return;
    let entries: Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true }); // a small kernel dir: sync is cheaper than a thread-pool round trip
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) await visit(join(dir, e.name));
    await tryRmdir(dir);
  };
  const tryRmdir = (dir: string): Promise<"removed" | "gone" | "busy"> =>
    rmdir(dir).then(
      () => {
        removed.push(dir);
        return "removed" as const;
      },
      (e: NodeJS.ErrnoException) => (e.code === "ENOENT" ? "gone" : "busy"),
    );
  for (const dir of cgroupDirs(layout, path)) await visit(dir);
  return removed;
}

/** The controllers the bundle's limits need, and the limit each one enforces. */
export const REQUIRED_CONTROLLERS: Record<string, string> = { memory: "memoryMiB", pids: "pids", cpu: "cpus" };

/** What the preflight reads; tests pass their own. */
export interface CgroupHostFacts {
  /** `cgroup.controllers` of the v2 root (v2 layouts only). */
  v2Controllers: string;
  /** /proc/cgroups: a controller with a non-zero hierarchy id is bound to a v1 hierarchy. */
  procCgroups: string;
  /** /proc/self/status (CapEff) and /proc/self/limits (RLIMIT_MEMLOCK). */
  status: string;
  limits: string;
}

const CAP_SYS_RESOURCE = 24n;

/** Reasons the sandbox cannot run its containers on this layout; empty when it can. */
export function cgroupProblems(layout: CgroupLayout, facts: CgroupHostFacts): string[] {
  const available = layout.kind === "v1" ? new Set(layout.controllers.keys()) : new Set(facts.v2Controllers.split(/\s+/).filter((c) => c !== ""));
  const missing = Object.keys(REQUIRED_CONTROLLERS).filter((c) => !available.has(c));
  const problems: string[] = [];
  if (missing.length > 0) {
    const where = layout.kind === "v1" ? "no cgroup v1 hierarchy offers" : `cgroup v2 at ${layout.root} does not offer`;
    const limits = missing.map((c) => REQUIRED_CONTROLLERS[c] ?? c).join(", ");
    let hint = "";
    if (layout.kind === "v2") {
      const boundToV1 = missing.filter((c) => new RegExp(`^${c}\\s+[1-9]\\d*\\s`, "m").test(facts.procCgroups));
      if (boundToV1.length > 0) hint = ` (${boundToV1.join(", ")} bound to a cgroup v1 hierarchy, see /proc/cgroups: a hybrid host's cgroup2 gets no such controller)`;
      hint += ` [available: ${[...available].join(" ") || "none"}]`;
    }
    problems.push(`${where} the ${missing.join(", ")} controller${missing.length > 1 ? "s" : ""} needed to enforce the job limits ${limits}${hint}`);
  }
  if (layout.kind === "v2") {
    // crun 1.8 filters devices on v2 with an eBPF program and first raises RLIMIT_MEMLOCK to unlimited
    const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(facts.status)?.[1];
    const hasSysResource = capEff !== undefined && ((BigInt(`0x${capEff}`) >> CAP_SYS_RESOURCE) & 1n) === 1n;
    const hard = /^Max locked memory\s+\S+\s+(\S+)/m.exec(facts.limits)?.[1] ?? "unlimited";
    if (!hasSysResource && hard !== "unlimited") {
      problems.push(`crun loads the cgroup v2 device filter (eBPF) only after raising RLIMIT_MEMLOCK, but this process lacks CAP_SYS_RESOURCE and its hard limit is ${hard} bytes`);
    }
  }
  return problems;
}

export async function readCgroupHostFacts(layout: CgroupLayout): Promise<CgroupHostFacts> {
  const read = (path: string) => readFile(path, "utf8").catch(() => "");
  const [v2Controllers, procCgroups, status, limits] = await Promise.all([
    layout.kind === "v2" ? read(join(layout.root, "cgroup.controllers")) : "",
    read("/proc/cgroups"),
    read("/proc/self/status"),
    read("/proc/self/limits"),
  ]);
  return { v2Controllers, procCgroups, status, limits };
}

/** Throws E_SANDBOX naming what is missing, before crun would fail with its own terse message. */
export async function assertCgroupSupport(layout: CgroupLayout, facts?: CgroupHostFacts): Promise<void> {
  const problems = cgroupProblems(layout, facts ?? (await readCgroupHostFacts(layout)));
  if (problems.length > 0) throw new DeltaError("E_SANDBOX", `cgroups cannot enforce the sandbox's limits: ${problems.join("; ")}`, { details: { layout: layout.kind, problems } });
}
