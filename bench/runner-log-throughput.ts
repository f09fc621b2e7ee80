/**
 * Log throughput of the runner: a step writes 200 MiB to stdout; we time from the job turning
 * `running` until the server holds every byte, and read the runner process's peak RSS (VmHWM).
 * The runner is a child process (the CLI bundled, `runner --isolation process`), the server runs
 * in this process. Baseline in the same run: the same bytes through a pipe into `cat`.
 * Also the CPU seconds the runner and the server (this process) used in that window, and the
 * load average (the machine is shared: wall-clock figures vary with it, CPU seconds less).
 * Prints one JSON document. Usage: tsx bench/runner-log-throughput.ts [MiB] [--durability full]
 * [--cpu-prof-dir DIR]
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync, mkdirSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { build } from "esbuild";
import { Api, jobSpec } from "../test/support/runner-harness.ts";
import { startServer } from "../src/server/index.ts";

const MiB = 1024 * 1024;
const args = process.argv.slice(2);
const profIdx = args.indexOf("--cpu-prof-dir");
// `--cpu-prof-dir DIR`: the runner child writes a V8 CPU profile there (run the bench itself with
// `node --cpu-prof --cpu-prof-dir DIR` to profile the server side too).
const profDir = profIdx >= 0 ? args.splice(profIdx, 2)[1] : undefined;
// `--durability full`: the server fsyncs before acknowledging (its default); the bench's default is `normal`.
const durIdx = args.indexOf("--durability");
const durability = durIdx >= 0 && args.splice(durIdx, 2)[1] === "full" ? "full" : "normal";
const sizeMiB = Number(args[0] ?? 200);
const total = sizeMiB * MiB;
const line = "2026-11-28T03:00:00.000Z INFO build step output line with some ordinary text 0123456789";
const producer = `yes '${line}' | head -c ${total}`;

function vmHwmKiB(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** CPU seconds (user + system) a process used so far, from /proc (clock ticks of 10 ms). */
function cpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "").split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

// The runner-only bundle, as `npm run build` makes it for `deltaci runner` (to a file of our own): no tsx.
const root0 = join(import.meta.dirname, "..");
const cli = join(root0, "dist", "runner-bench", "cli.mjs");
await build({ entryPoints: [join(root0, "src", "cli", "runner-main.ts")], outfile: cli, bundle: true, platform: "node", format: "esm", target: "node20", packages: "external", logLevel: "warning" });

// Baseline: the same bytes through a pipe.
const b0 = performance.now();
spawnSync("sh", ["-c", `${producer} | cat > /dev/null`]);
const baselineS = (performance.now() - b0) / 1000;

const root = mkdtempSync(join(tmpdir(), "deltaci-bench-runner-"));
chmodSync(root, 0o711);
const server = await startServer({ dataDir: join(root, "server"), port: 0, host: "127.0.0.1", logLimitBytes: total + 16 * MiB, durability });
const api = new Api(server.url, server.apiToken, server.controllerToken);
try {
  const jobId = await api.submit(jobSpec({
    limits: { timeoutMs: 600_000, cpus: 1, memoryMiB: 512, diskMiB: 1024, pids: 256, logMiB: sizeMiB + 16 },
    steps: [{ name: "flood", run: producer }],
  }));
  const tokenFile = join(root, "token");
  writeFileSync(tokenFile, await api.registrationToken(), { mode: 0o600 });
  mkdirSync(join(root, "slot"), { mode: 0o711 });
  const runner = spawn(process.execPath, [
    ...(profDir ? ["--cpu-prof", "--cpu-prof-dir", profDir] : []), cli, "runner", "--server", server.url, "--registration-token-file", tokenFile, "--isolation", "process",
    "--work-dir", join(root, "slot", "work"), "--slot", "9", "--idle-timeout", "60s", "--log-level", "warn",
  ], { stdio: ["ignore", "ignore", "inherit"] });
  const pid = runner.pid ?? 0;
  let peakKiB = 0;
  const rss = setInterval(() => (peakKiB = Math.max(peakKiB, vmHwmKiB(pid))), 20);
  const exited = new Promise<number | null>((resolve) => runner.once("exit", (code) => resolve(code)));
  const idleKiB = await (async () => {
    await api.waitFor(jobId, (j) => j.state !== "queued", "leased", 120_000);
    return vmHwmKiB(pid);
  })();
  await api.waitFor(jobId, (j) => j.state === "running", "running", 120_000);
  const t0 = performance.now();
  const runnerCpu0 = cpuSeconds(pid);
  const serverCpu0 = process.cpuUsage();
  let held = 0;
  while (held < total) {
    held = (await api.job(jobId)).log.bytes;
    await new Promise((r) => setTimeout(r, 10));
  }
  const runnerS = (performance.now() - t0) / 1000;
  const runnerCpuS = cpuSeconds(pid) - runnerCpu0;
  const serverCpu = process.cpuUsage(serverCpu0);
  const serverCpuS = (serverCpu.user + serverCpu.system) / 1e6;
  const job = await api.waitDone(jobId, 120_000);
  const code = await exited;
  clearInterval(rss);
  process.stdout.write(JSON.stringify({
    bench: "runner-log-throughput",
    bytes: total,
    runner: { seconds: +runnerS.toFixed(3), mbPerS: +(total / 1e6 / runnerS).toFixed(1), cpuSeconds: +runnerCpuS.toFixed(2), peakRssMiB: +(peakKiB / 1024).toFixed(1), rssAtLeaseMiB: +(idleKiB / 1024).toFixed(1), exitCode: code, jobState: job.state, logBytes: job.log.bytes },
    server: { cpuSeconds: +serverCpuS.toFixed(2), durability },
    loadAverage1m: loadavg()[0],
    baselinePipeCat: { seconds: +baselineS.toFixed(3), mbPerS: +(total / 1e6 / baselineS).toFixed(1) },
    goals: { mbPerS: 200, peakRssMiB: 100 },
    note: "MB/s = 1e6 bytes/s, from the job turning running until the server holds every byte; peak RSS = VmHWM of the runner process",
  }) + "\n");
} finally {
  await api.close();
  await server.close();
  rmSync(root, { recursive: true, force: true });
}
