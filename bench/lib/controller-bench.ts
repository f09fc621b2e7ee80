/**
 * Helpers of the controller benchmarks (bench/controller-*.ts): the CLI bundled once so runners
 * start without tsx, an in-process server + controller (as `deltaci up` runs them), a cpuacct
 * cgroup around the whole process tree for CPU seconds, and small statistics.
 */
import { mkdtemp, mkdir, readFile, rm, rmdir, writeFile, chmod, symlink } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { execFileSync, spawnSync } from "node:child_process";
import { build } from "esbuild";
import { pino } from "pino";
import { HttpClient } from "../../src/client/http.ts";
import { startServer, type RunningServer } from "../../src/server/index.ts";
import { startController, type RunningController } from "../../src/controller/index.ts";
import { LocalProvider } from "../../src/controller/local-provider.ts";
import { defaultSlotReaper } from "../../src/cli/commands/controller.ts";
import { InProcessProvider } from "../../src/cli/run/in-process-provider.ts";
import type { RunnerProvider } from "../../src/controller/provider.ts";
import { CrunSandboxFactory } from "../../src/sandbox/oci/crun-sandbox-factory.ts";
import { ProcessSandboxFactory } from "../../src/sandbox/process/process-sandbox.ts";
import { hostPoolDefaults } from "../../src/config/controller-config.ts";
import { systemClock } from "../../src/base/clock.ts";
import type { Pool } from "../../src/controller/types.ts";
import type { JobStatus, SubmittedJobSpec } from "../../src/protocol/schemas.ts";

export const ROOT = join(import.meta.dirname, "..", "..");

/**
 * Where the bench bundles go. The oci sandbox finds its C helpers at `./native/` next to its
 * module (import.meta.url), which in a bundle is the bundle's directory: link it there.
 */
async function benchDist(): Promise<string> {
  const dir = join(ROOT, "dist", "controller-bench");
  await mkdir(dir, { recursive: true });
  if (!existsSync(join(dir, "native"))) await symlink(join(ROOT, "src", "sandbox", "oci", "native"), join(dir, "native"));
  return dir;
}

/** Bundles the CLI (as `npm run build` does) to a file of our own, so runners skip tsx. */
export async function bundledCli(): Promise<{ command: string; args: string[] }> {
  const outfile = join(await benchDist(), "cli.mjs");
  await build({ entryPoints: [join(ROOT, "src", "cli", "main.ts")], outfile, bundle: true, platform: "node", format: "esm", target: "node20", packages: "external", logLevel: "warning" });
  return { command: process.execPath, args: [outfile] };
}

/**
 * An experiment, not the product: a runner-only entry (just `deltaci runner`, packages bundled
 * and minified), to show what a lean runner entry point would save per runner start.
 */
export async function runnerOnlyBundle(): Promise<{ command: string; args: string[] }> {
  const outfile = join(await benchDist(), "runner-only.mjs");
  const contents = `import { Command } from "commander"; import { registerRunnerCommand } from "./src/cli/commands/runner.ts";
const p = new Command("deltaci").version("0.1.0"); registerRunnerCommand(p); await p.parseAsync(process.argv);`;
  await build({
    stdin: { contents, resolveDir: ROOT, sourcefile: "runner-entry.ts", loader: "ts" }, outfile, bundle: true, platform: "node", format: "esm", target: "node20",
    minify: true, banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" }, logLevel: "warning",
  });
  return { command: process.execPath, args: [outfile] };
}

/** `--runner=cli` (default: the whole CLI bundled, as `npm run build` makes it) or `--runner=runner-only`. */
export async function runnerCommandFromArgv(argv: string[]): Promise<{ name: string; command: { command: string; args: string[] } }> {
  const name = argv.find((a) => a.startsWith("--runner="))?.slice(9) ?? "cli";
  return { name, command: name === "runner-only" ? await runnerOnlyBundle() : await bundledCli() };
}

export const wallNowMs = () => performance.timeOrigin + performance.now();

export function summary(values: number[]): { n: number; p50: number; p90: number; p99: number; max: number; mean: number } {
  const s = [...values].sort((a, b) => a - b);
  const p = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil((q / 100) * s.length) - 1))] ?? NaN;
  const r = (x: number) => Math.round(x * 100) / 100;
  return { n: s.length, p50: r(p(50)), p90: r(p(90)), p99: r(p(99)), max: r(s[s.length - 1] ?? NaN), mean: r(s.reduce((a, b) => a + b, 0) / Math.max(1, s.length)) };
}

/** Median wall time of running a command `n` times (ms). */
export function timeCommand(cmd: string, args: string[], n: number): { p50: number; min: number } {
  const t: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    const r = spawnSync(cmd, args, { stdio: "ignore" });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: exit ${r.status}`);
    t.push(performance.now() - s);
  }
  t.sort((a, b) => a - b);
  return { p50: Math.round((t[Math.floor(n / 2)] ?? 0) * 10) / 10, min: Math.round((t[0] ?? 0) * 10) / 10 };
}

/** A cpuacct cgroup holding this process (and so every child it starts): CPU seconds of the whole tree. */
export async function cpuCgroup(): Promise<{ seconds(): Promise<number>; close(): Promise<void> } | null> {
  const dir = `/sys/fs/cgroup/cpuacct/deltaci-bench-${process.pid}`;
  if (!existsSync("/sys/fs/cgroup/cpuacct")) return null;
  try {
    await mkdir(dir);
    await writeFile(join(dir, "cgroup.procs"), String(process.pid));
  } catch {
    return null;
  }
  return {
    seconds: async () => Number(await readFile(join(dir, "cpuacct.usage"), "utf8")) / 1e9,
    close: async () => {
      await writeFile("/sys/fs/cgroup/cpuacct/cgroup.procs", String(process.pid)).catch(() => {});
      for (const pid of (await readFile(join(dir, "cgroup.procs"), "utf8").catch(() => "")).split("\n").filter(Boolean)) {
        await writeFile("/sys/fs/cgroup/cpuacct/cgroup.procs", pid).catch(() => {});
      }
      await rmdir(dir).catch(() => {});
    },
  };
}

export interface Stack {
  dir: string;
  server: RunningServer;
  controller: RunningController;
  api: HttpClient;
  launches: Array<{ atMs: number; slot: string }>;
  submit(spec: SubmittedJobSpec): Promise<string>;
  job(id: string): Promise<JobStatus>;
  log(id: string): Promise<string>;
  serverMetric(name: string): Promise<number>;
  until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

export function spec(name: string, run: string, isolationLimits = true): SubmittedJobSpec {
  return {
    name, runsOn: { labels: [] }, image: { kind: "host" }, env: {}, steps: [{ name: "s", run }],
    limits: { timeoutMs: 120_000, cpus: 1, memoryMiB: isolationLimits ? 256 : 256, diskMiB: 64, pids: 128, logMiB: 1 },
    network: { egress: "none" }, source: { kind: "none" }, caches: [], artifacts: [],
  };
}

export async function startStack(o: {
  isolation: "oci" | "process"; maxRunners: number; minIdle: number; command: { command: string; args: string[] };
  /** Runners inside this process (the CLI's in-process provider, as `deltaci run` uses) instead of processes. */
  inProcess?: boolean;
}): Promise<Stack> {
  const dir = await mkdtemp(join(tmpdir(), "dci-ctl-bench-"));
  await chmod(dir, 0o711);
  const server = await startServer({ dataDir: join(dir, "server"), port: 0 });
  const api = new HttpClient(server.url, { timeoutMs: 60_000, connections: 32 });
  const logger = pino({ level: "warn" }, pino.destination(2));
  const host = hostPoolDefaults(dir);
  const pool: Pool = { name: "default", ...host, labels: [], max: o.maxRunners, minIdle: o.minIdle, isolation: o.isolation };
  const workRoot = join(dir, "runners");
  const launches: Stack["launches"] = [];
  const slotBase = 20_000 + (process.pid % 20_000);
  const sandboxLogger = { info: () => {}, warn: (f: Record<string, unknown>, m: string) => logger.warn(f, m) };
  const provider: RunnerProvider = o.inProcess
    ? new InProcessProvider({
      workRoot, slotBase, maxSlots: o.maxRunners, clock: systemClock, idleTimeoutMs: 10 * 60_000,
      logger: { info: () => {}, warn: (f, m) => logger.warn(f, m), error: (f, m) => logger.error(f, m) },
      sandboxFactory: o.isolation === "oci" ? new CrunSandboxFactory({ clock: systemClock, logger: sandboxLogger, cgroupParent: "deltaci" }) : new ProcessSandboxFactory({ clock: systemClock, logger: sandboxLogger }),
    })
    : new LocalProvider({
      workRoot, command: o.command, runnerIdleTimeoutMs: 10 * 60_000, drainTimeoutMs: 10_000, slotBase,
      reaper: defaultSlotReaper([pool], logger), clock: systemClock, logger,
    });
  const launch = provider.launch.bind(provider);
  provider.launch = async (req) => {
    const atMs = wallNowMs();
    const r = await launch(req);
    launches.push({ atMs, slot: r.id.split("-")[1] ?? "" });
    return r;
  };
  const controller = await startController(
    { serverUrl: server.url, controllerToken: server.controllerToken, workRoot, pools: [pool], maxRunners: o.maxRunners, tickMs: 100 },
    { provider, logger },
  );
  const s: Stack = {
    dir, server, controller, api, launches,
    async submit(sp) {
      return (await api.call<{ jobId: string }>({ method: "POST", path: "/v1/jobs", token: server.apiToken, json: { spec: sp, fork: false } })).body.jobId;
    },
    async job(id) {
      return (await api.call<JobStatus>({ method: "GET", path: `/v1/jobs/${id}`, token: server.apiToken })).body;
    },
    async log(id) {
      return (await api.call<string>({ method: "GET", path: `/v1/jobs/${id}/log`, token: server.apiToken })).body;
    },
    async serverMetric(name) {
      const text = (await api.call<string>({ method: "GET", path: "/metrics" })).body;
      const m = new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, "m").exec(text);
      return m ? Number(m[1]) : 0;
    },
    async until(what, cond, timeoutMs = 120_000) {
      const deadline = Date.now() + timeoutMs;
      while (!(await cond())) {
        if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
        await new Promise((r) => setTimeout(r, 2));
      }
    },
    async close() {
      await controller.stop({ runners: "terminate" });
      await api.destroy();
      await server.close();
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    },
  };
  return s;
}

/** The runner's own log of slot `slot` (pino JSON lines) as records. */
export async function runnerLog(stack: Stack, slot: string): Promise<Array<{ time: number; msg: string } & Record<string, unknown>>> {
  const text = await readFile(join(stack.dir, "runners", "controller", `slot-${slot}`, "runner.log"), "utf8").catch(() => "");
  return text.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as { time: number; msg: string });
}

export function crunAvailable(): boolean {
  try {
    execFileSync("crun", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
