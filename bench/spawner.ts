/**
 * The resident spawner's CPU per host command (docs/sandbox.md, "Host commands"): n runs of
 * /bin/true through it; CPU of the spawner and of everything it ran and reaped (utime + stime +
 * cutime + cstime from /proc) and of the caller. Baseline in the same run: n `child_process`
 * spawns of /bin/true from this node process (what the host did before the spawner). With
 * `--source FILE`, another spawner.c too (e.g. `git show main:src/sandbox/oci/native/spawner.c`),
 * measured round-robin with the others. Prints JSON.
 * Usage: tsx bench/spawner.ts [n=400] [--source FILE]
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { buildSpawner } from "../src/sandbox/oci/native-tools.ts";
import { ResidentSpawner } from "../src/sandbox/oci/resident-spawner.ts";

const args = process.argv.slice(2);
const sourceAt = args.indexOf("--source");
const source = sourceAt >= 0 ? args[sourceAt + 1] : undefined;
const n = Number(args.find((a, i) => /^\d+$/.test(a) && args[i - 1] !== "--source") ?? 400);
const ROUND = 50;
const dir = mkdtempSync(join(tmpdir(), "deltaci-bench-spawner-"));
const logger = { info: () => {}, warn: (_f: Record<string, unknown>, m: string) => process.stderr.write(`warn: ${m}\n`) };

/** utime + stime + cutime + cstime of `pid`, in ms. */
function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  return [11, 12, 13, 14].reduce((sum, i) => sum + Number(f[i]), 0) * 10;
}

interface Subject {
  name: string;
  run: () => Promise<unknown>;
  /** CPU ms of what runs the commands (the spawner tree), or 0 for the caller alone. */
  cpu: () => number;
  close: () => Promise<void>;
  callerMs: number;
  runnerMs: number;
}

async function spawnerSubject(name: string, path: string): Promise<Subject> {
  const s = new ResidentSpawner(path, logger);
  // the spawner is the command's parent, or (a spawner with request processes) its grandparent
  const ids = (await s.run("sh", ["-c", "echo $PPID $(ps -o ppid= -p $PPID)"], 10_000)).stdout.trim().split(/\s+/).map(Number);
  const pid = ids.find((p) => readFileSync(`/proc/${p}/cmdline`, "utf8").includes("deltaci-spawner-"));
  if (pid === undefined) throw new Error(`no spawner among ${ids.join(", ")}`);
  return { name, run: () => s.run("/bin/true", [], 10_000), cpu: () => cpuMs(pid), close: () => s.close(), callerMs: 0, runnerMs: 0 };
}

const direct: Subject = {
  name: "baseline: child_process.spawn from node",
  run: () => new Promise((resolve, reject) => spawn("/bin/true", [], { stdio: "ignore" }).once("exit", resolve).once("error", reject)),
  cpu: () => 0,
  close: () => Promise.resolve(),
  callerMs: 0,
  runnerMs: 0,
};

const subjects: Subject[] = [await spawnerSubject("spawner (this tree)", (await buildSpawner(dir)).path)];
if (source !== undefined) {
  const other = join(dir, "other-spawner");
  execFileSync("cc", ["-O2", "-Wall", "-o", other, source]);
  subjects.push(await spawnerSubject(`spawner (${source})`, other));
}
subjects.push(direct);
const loadStart = loadavg();
for (let done = 0; done < n; done += ROUND) {
  for (const s of subjects) {
    const c0 = cpuMs(process.pid);
    const r0 = s.cpu();
    for (let i = 0; i < ROUND; i++) await s.run();
    s.runnerMs += s.cpu() - r0;
    s.callerMs += cpuMs(process.pid) - c0;
  }
}
const per = (ms: number) => Number((ms / n).toFixed(3));
console.log(JSON.stringify({
  bench: "spawner",
  commands: n,
  results: subjects.map((s) => ({ name: s.name, cpuMsPerCommand: per(s.callerMs + s.runnerMs), callerMs: per(s.callerMs), spawnerAndCommandMs: per(s.runnerMs) })),
  note: "CPU per /bin/true run (from /proc, 10 ms ticks over all runs); caller = this node process with its reaped children (the baseline's commands); spawnerAndCommand = the spawner, the command and what it reaped",
  loadavgAtStart: loadStart,
  loadavgAtEnd: loadavg(),
}));
for (const s of subjects) await s.close();
rmSync(dir, { recursive: true, force: true });
