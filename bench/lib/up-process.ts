/**
 * Helpers of the runner-host benchmarks: `deltaci up` as a real child process (the CLI bundle,
 * as `npm run build` makes it; its runner hosts or runner processes through bin/deltaci.js, which
 * runs the runner-only bundle), one HTTP client that submits and polls, and /proc readings of the
 * process tree: CPU (utime+stime+cutime+cstime of `up` and of each of its children, so a child
 * that exited in between is counted through `up`'s cutime) and RSS.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomInt } from "node:crypto";
import { chmod, mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HttpClient } from "../../src/client/http.ts";
import type { JobStatus, SubmittedJobSpec } from "../../src/protocol/schemas.ts";
import { ROOT, wallNowMs } from "./controller-bench.ts";

const TICKS_PER_S = 100;

/** Builds dist/ (`npm run build`), so `deltaci up` and its hosts start from the bundles. */
export function buildBundles(): string {
  const r = spawnSync(process.execPath, [join(ROOT, "scripts", "build.mjs")], { stdio: "inherit" });
  if (r.status !== 0) throw new Error("npm run build failed");
  return join(ROOT, "dist", "deltaci-main.cjs");
}

/** Whether a file under src/ changed after `bundle` was built (then bin/deltaci.js runs the sources through tsx). */
export function sourcesNewerThan(bundle: string): boolean {
  const builtAt = statSync(bundle).mtimeMs;
  return readdirSync(join(ROOT, "src"), { recursive: true, withFileTypes: true }).some((e) => e.isFile() && statSync(join(e.parentPath, e.name)).mtimeMs > builtAt);
}

/** CPU seconds of a process: its own (utime + stime) and its waited-for children's (cutime + cstime); 0 when gone. */
function cpuOf(pid: number): { self: number; sys: number; children: number } {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "").split(" ");
    return { self: (Number(f[11]) + Number(f[12])) / TICKS_PER_S, sys: Number(f[12]) / TICKS_PER_S, children: (Number(f[13]) + Number(f[14])) / TICKS_PER_S };
  } catch {
    return { self: 0, sys: 0, children: 0 };
  }
}

/** CPU seconds by part of the tree below `up`. */
export interface CpuParts { upSelf: number; upChildren: number; childrenSelf: number; childrenSelfSys: number; childrenChildren: number; total: number }

const diff = (a: CpuParts, b: CpuParts): CpuParts => ({
  upSelf: b.upSelf - a.upSelf, upChildren: b.upChildren - a.upChildren, childrenSelf: b.childrenSelf - a.childrenSelf, childrenSelfSys: b.childrenSelfSys - a.childrenSelfSys,
  childrenChildren: b.childrenChildren - a.childrenChildren, total: b.total - a.total,
});
/** `after − before`, rounded to ms. */
export function cpuDelta(a: CpuParts, b: CpuParts): CpuParts {
  const d = diff(a, b);
  return Object.fromEntries(Object.entries(d).map(([k, v]) => [k, Math.round(v * 1000) / 1000])) as unknown as CpuParts;
}

/** The direct children of `pid` (from every /proc/N/stat's ppid). */
export async function childrenOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
    const ppid = Number(stat.replace(/^.*\) /s, "").split(" ")[1]);
    if (ppid === pid) out.push(Number(name));
  }
  return out;
}

/** A /proc/PID/status field in KiB (VmRSS, VmHWM), 0 when gone. */
export function statusKiB(pid: number, field: "VmRSS" | "VmHWM"): number {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** A field of /proc/PID/smaps_rollup in KiB (Pss, Private_Dirty, …), 0 when gone. */
export function smapsKiB(pid: number, field: string): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return "";
  }
}

export interface UpProcess {
  url: string;
  pid: number;
  api: HttpClient;
  submit(spec: SubmittedJobSpec): Promise<string>;
  job(id: string): Promise<JobStatus>;
  log(id: string): Promise<string>;
  /** The newest 1,000 jobs. */
  jobs(): Promise<JobStatus[]>;
  /** Jobs in a terminal state (server /metrics). */
  finished(): Promise<{ succeeded: number; failed: number; errored: number; done: number }>;
  /** Runners waiting in a lease long poll: idle (server /metrics). */
  waiters(): Promise<number>;
  /** The runner-host children of `up` (session mode). */
  hostPids(): Promise<number[]>;
  /** CPU seconds of `up` (server + controller) and every process below it, by the accounting above. */
  cpuSeconds(): Promise<CpuParts>;
  /** Polls `cond` every `everyMs` (one client, so the check barely loads what it measures). */
  until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs?: number, everyMs?: number): Promise<void>;
  close(): Promise<void>;
}

export interface UpOptions {
  bundle: string;
  mode: "session" | "process";
  isolation: "oci" | "process";
  maxRunners: number;
  minIdle: number;
  extra?: string[];
  /** `--cpu-prof-dir`: every node process of the tree writes a V8 CPU profile there (NODE_OPTIONS). */
  cpuProfDir?: string | undefined;
}

/** Starts `deltaci up` on a loopback port in a fresh temp dir, with a random slot range. */
export async function startUp(o: UpOptions): Promise<UpProcess> {
  const dir = await mkdtemp(join(tmpdir(), "dci-up-bench-"));
  await chmod(dir, 0o711);
  const slotBase = 30_000 + randomInt(2_000) * 16;
  const proc: ChildProcess = spawn(process.execPath, [
    o.bundle, "up", "--listen", "127.0.0.1:0", "--data-dir", join(dir, "data"), "--work-root", join(dir, "runners"),
    "--max-runners", String(o.maxRunners), "--min-idle", String(o.minIdle), "--runner-mode", o.mode, "--isolation", o.isolation,
    "--slot-base", String(slotBase), "--log-level", "warn", ...(o.extra ?? []),
  ], { cwd: dir, stdio: ["ignore", "pipe", "inherit"], env: {
    ...process.env, DELTACI_API_TOKEN: "", DELTACI_CONTROLLER_TOKEN: "",
    ...(o.cpuProfDir ? { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --import ${join(ROOT, "bench", "lib", "cpu-prof-preload.mjs")}`, DELTACI_BENCH_CPU_PROF_DIR: o.cpuProfDir } : {}),
  } });
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    proc.stdout?.on("data", (b: Buffer) => {
      out += b.toString();
      const m = /server ready at (\S+)/.exec(out);
      if (m?.[1]) resolve(m[1]);
    });
    proc.once("exit", (code) => reject(new Error(`deltaci up exited ${code}: ${out}`)));
  });
  const apiToken = (await readFile(join(dir, "data", "api-token"), "utf8")).trim();
  const api = new HttpClient(url, { timeoutMs: 60_000, connections: 8 });
  const pid = proc.pid ?? 0;
  const metric = (text: string, name: string) => Number(new RegExp(`^deltaci_jobs\\{state="${name}"\\} (\\S+)$`, "m").exec(text)?.[1] ?? 0);
  const up: UpProcess = {
    url, pid, api,
    async submit(spec) {
      return (await api.call<{ jobId: string }>({ method: "POST", path: "/v1/jobs", token: apiToken, json: { spec, fork: false } })).body.jobId;
    },
    async job(id) {
      return (await api.call<JobStatus>({ method: "GET", path: `/v1/jobs/${id}`, token: apiToken })).body;
    },
    async log(id) {
      return (await api.call<string>({ method: "GET", path: `/v1/jobs/${id}/log`, token: apiToken })).body;
    },
    async jobs() {
      return (await api.call<{ jobs: JobStatus[] }>({ method: "GET", path: "/v1/jobs?limit=1000", token: apiToken })).body.jobs;
    },
    async finished() {
      const text = (await api.call<string>({ method: "GET", path: "/metrics" })).body;
      const succeeded = metric(text, "succeeded");
      const failed = metric(text, "failed");
      const errored = metric(text, "errored");
      return { succeeded, failed, errored, done: succeeded + failed + errored };
    },
    async waiters() {
      const text = (await api.call<string>({ method: "GET", path: "/metrics" })).body;
      return Number(/^deltaci_lease_waiters (\S+)$/m.exec(text)?.[1] ?? 0);
    },
    async hostPids() {
      return (await childrenOf(pid)).filter((p) => cmdline(p).includes("runner-host"));
    },
    async cpuSeconds() {
      const own = cpuOf(pid);
      const parts: CpuParts = { upSelf: own.self, upChildren: own.children, childrenSelf: 0, childrenSelfSys: 0, childrenChildren: 0, total: 0 };
      for (const c of await childrenOf(pid)) {
        const x = cpuOf(c);
        parts.childrenSelf += x.self;
        parts.childrenSelfSys += x.sys;
        parts.childrenChildren += x.children;
        // a host's live children (its resident spawner): their own time and what they waited for
        for (const g of await childrenOf(c)) {
          const y = cpuOf(g);
          parts.childrenChildren += y.self + y.children;
        }
      }
      parts.total = parts.upSelf + parts.upChildren + parts.childrenSelf + parts.childrenChildren;
      return parts;
    },
    async until(what, cond, timeoutMs = 120_000, everyMs = 20) {
      const deadline = wallNowMs() + timeoutMs;
      while (!(await cond())) {
        if (wallNowMs() > deadline) throw new Error(`timed out: ${what}`);
        await new Promise((r) => setTimeout(r, everyMs));
      }
    },
    async close() {
      proc.kill("SIGTERM");
      const late = setTimeout(() => proc.kill("SIGKILL"), 30_000);
      await exited;
      clearTimeout(late);
      await api.destroy();
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    },
  };
  return up;
}

/** The wall-clock ms at which a `date +%s%N` step ran, from the job's log. */
export function stepStartedMs(log: string, id: string): number {
  const line = log.split("\n").find((l) => /^\d{19}$/.test(l.trim()));
  if (!line) throw new Error(`no timestamp in the log of ${id}: ${log.slice(0, 300)}`);
  return Number(BigInt(line.trim()) / 1000n) / 1000;
}
