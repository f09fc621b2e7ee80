/**
 * What a fleet of runners on this machine may leave behind, found from the host's own view:
 * processes (by command line or working directory under a dir), crun containers and cgroups of
 * the slots used under a work root, mounts and loop devices backed by files under a dir.
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir, readFile, readlink } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { readProcStat } from "../../src/controller/proc.ts";

export interface HostProcess {
  pid: number;
  ppid: number;
  startTime: string;
  argv: string[];
}

export interface Leftovers {
  processes: string[];
  containers: string[];
  mounts: string[];
  loops: string[];
  cgroups: string[];
}

const under = (path: string, dir: string) => path === dir || path.startsWith(`${dir}/`);

/** Processes (not this one) with an argument naming a path under `dir`, or running in a directory under it, that `match` accepts. */
export async function processesUnder(dir: string, match: (argv: string[]) => boolean): Promise<HostProcess[]> {
  const out: HostProcess[] = [];
  for (const name of await readdir("/proc")) {
    const pid = Number(name);
    if (!/^\d+$/.test(name) || pid === process.pid) continue;
    try {
      const argv = (await readFile(`/proc/${name}/cmdline`, "utf8")).split("\0").filter((a) => a.length > 0);
      const cwd = await readlink(`/proc/${name}/cwd`).catch(() => "");
      if (!argv.some((a) => under(a, dir)) && !under(cwd, dir)) continue;
      const st = await readProcStat(pid);
      if (st && st.state !== "Z" && match(argv)) out.push({ pid, ppid: st.ppid, startTime: st.startTime, argv });
    } catch {}
  }
  return out;
}

/** Slot indexes that have a directory under the controller's work root. */
export async function slotsUnder(workRoot: string): Promise<number[]> {
  const names = [...(await readdir(workRoot).catch(() => [] as string[])), ...(await readdir(join(workRoot, "controller")).catch(() => [] as string[]))];
  return [...new Set(names.map((n) => /^slot-(\d+)$/.exec(n)?.[1]).filter((n): n is string => n !== undefined).map(Number))].sort((a, b) => a - b);
}

export async function leftoversUnder(dir: string, workRoot: string): Promise<Leftovers> {
  const slots = await slotsUnder(workRoot);
  const processes = (await processesUnder(dir, () => true)).map((p) => `${p.pid} ${p.argv.join(" ")}`);
  let containers: string[] = [];
  try {
    const ids = execFileSync("crun", ["--root", "/run/deltaci/crun", "list", "-q"], { encoding: "utf8" }).split("\n");
    containers = ids.filter((id) => slots.some((s) => id.startsWith(`deltaci-s${s}-`)));
  } catch {}
  const mounts = (await readFile("/proc/self/mountinfo", "utf8")).split("\n").map((l) => l.split(" ")[4] ?? "").filter((m) => under(m, dir));
  let loops: string[] = [];
  try {
    loops = execFileSync("losetup", ["-l", "-n", "-O", "NAME,BACK-FILE"], { encoding: "utf8" }).split("\n").filter((l) => l.includes(dir));
  } catch {}
  const cgroups: string[] = [];
  for (const ctrl of await readdir("/sys/fs/cgroup").catch(() => [] as string[])) {
    for (const s of slots) {
      const d = join("/sys/fs/cgroup", ctrl, "deltaci", `slot-${s}`);
      if (existsSync(d)) cgroups.push(d);
    }
  }
  return { processes, containers, mounts, loops, cgroups };
}

/** A TCP port free on loopback right now (the soak restarts its server on the same port). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      s.close(() => (addr && typeof addr === "object" ? resolve(addr.port) : reject(new Error("no port"))));
    });
  });
}
