/**
 * Cgroup layout detection and the per-job cgroup: its processes (for killing a step's tree) and
 * the counters that prove a limit was hit (OOM kills, refused forks). Works on v1, v2 and hybrid.
 */
import { readFileSync } from "node:fs";
import { readdir, readFile, rmdir } from "node:fs/promises";
import { join } from "node:path";

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
  async pids(): Promise<number[]> {
    const dir = this.dirOf("pids") ?? this.dirOf("memory") ?? this.dirOf("freezer");
    if (dir === null) return [];
    const text = await readFile(join(dir, "cgroup.procs"), "utf8").catch(() => "");
    return text.split("\n").filter((l) => l !== "").map(Number);
  }

  async counters(): Promise<LimitCounters> {
    const mem = this.dirOf("memory");
    const pids = this.dirOf("pids");
    const read = (dir: string | null, file: string) => (dir === null ? Promise.resolve("") : readFile(join(dir, file), "utf8").catch(() => ""));
    if (this.layout.kind === "v2") {
      const [m, p] = await Promise.all([read(mem, "memory.events"), read(pids, "pids.events")]);
      return { oomKills: counter(m, "oom_kill"), pidsMax: counter(p, "max") };
    }
    const [m, p] = await Promise.all([read(mem, "memory.oom_control"), read(pids, "pids.events")]);
    return { oomKills: counter(m, "oom_kill"), pidsMax: counter(p, "max") };
  }

  /** Removes the job's cgroup directories (crun may leave empty ones behind). */
  async remove(): Promise<void> {
    await removeCgroupTree(this.layout, this.path);
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
  const visit = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => null);
    if (entries === null) return;
    for (const e of entries) if (e.isDirectory()) await visit(join(dir, e.name));
    try {
      await rmdir(dir);
      removed.push(dir);
    } catch {}
  };
  for (const dir of cgroupDirs(layout, path)) await visit(dir);
  return removed;
}
