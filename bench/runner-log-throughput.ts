/**
 * Log throughput of the runner: a step writes 200 MiB to stdout; we time from the job turning
 * `running` until the server holds every byte, and read the runner's RSS: at lease, peak during
 * the job (sampled VmRSS) and VmHWM. By default the runner is a session of a runner host (the
 * runner-only bundle, `deltaci runner-host --slots 1`, launched over its socket as a controller
 * does); with `--runner-process`, a `deltaci runner` process. Sandbox `--isolation process`
 * (default) or `oci`. The server runs in this process, at its default (full) durability unless
 * `--durability normal`. Baseline in the same run: the same bytes through a pipe into `cat`.
 * Also the CPU seconds the runner and the server (this process) used in that window, and the
 * load average (the machine is shared: wall-clock figures vary with it, CPU seconds less).
 * Prints one JSON document. Usage: tsx bench/runner-log-throughput.ts [MiB] [--durability normal]
 * [--runner-process] [--server-process] [--isolation process|oci] [--cpu-prof-dir DIR]
 */
import { spawn, spawnSync } from "node:child_process";
import { randomInt } from "node:crypto";
import { connect } from "node:net";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync, mkdirSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { build } from "esbuild";
import { Api, jobSpec } from "../test/support/runner-harness.ts";
import { startServer } from "../src/server/index.ts";
import { spawnDeltaci } from "./lib/protocol-client.ts";
import { statusKiB } from "./lib/up-process.ts";

const MiB = 1024 * 1024;
const args = process.argv.slice(2);
const profIdx = args.indexOf("--cpu-prof-dir");
// `--cpu-prof-dir DIR`: the runner child writes a V8 CPU profile there (run the bench itself with
// `node --cpu-prof --cpu-prof-dir DIR` to profile the server side too).
const profDir = profIdx >= 0 ? args.splice(profIdx, 2)[1] : undefined;
// The server's default durability (`full`: it fsyncs before acknowledging), or `--durability normal`.
const durIdx = args.indexOf("--durability");
const durability = durIdx >= 0 && args.splice(durIdx, 2)[1] === "normal" ? "normal" : "full";
const isoIdx = args.indexOf("--isolation");
const isolation = isoIdx >= 0 && args.splice(isoIdx, 2)[1] === "oci" ? "oci" : "process";
const asProcess = args.includes("--runner-process");
if (asProcess) args.splice(args.indexOf("--runner-process"), 1);
const serverAsProcess = args.includes("--server-process");
if (serverAsProcess) args.splice(args.indexOf("--server-process"), 1);
const sizeMiB = Number(args[0] ?? 200);
const total = sizeMiB * MiB;
const line = "2026-11-28T03:00:00.000Z INFO build step output line with some ordinary text 0123456789";
const producer = `yes '${line}' | head -c ${total}`;


/** CPU seconds (user, system) a process used so far, from /proc (clock ticks of 10 ms). */
function cpuSeconds(pid: number): { user: number; system: number } {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "").split(" ");
    return { user: Number(fields[11]) / 100, system: Number(fields[12]) / 100 };
  } catch {
    return { user: 0, system: 0 };
  }
}

/** Log PUTs the server answered and their summed latency (its /metrics), all statuses. */
async function logPutStats(url: string): Promise<{ count: number; seconds: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let count = 0;
  let seconds = 0;
  for (const m of text.matchAll(/^deltaci_http_request_duration_seconds_(count|sum)\{([^}]*)\} (\S+)$/gm)) {
    if (!m[2]?.includes('method="PUT"') || !m[2].includes('route="/v1/runner/log"')) continue;
    if (m[1] === "count") count += Number(m[3]);
    else seconds += Number(m[3]);
  }
  return { count, seconds };
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
const server = serverAsProcess
  ? await spawnDeltaci(["--durability", durability, "--log-limit", `${sizeMiB + 16}Mi`]).then((c) => ({ ...c, close: () => c.stop(), pid: c.proc.pid ?? 0 }))
  : { ...(await startServer({ dataDir: join(root, "server"), port: 0, host: "127.0.0.1", logLimitBytes: total + 16 * MiB, durability })), pid: process.pid };
/** The server's CPU seconds so far (user, system): this process's, or the child's from /proc. */
const serverCpu = (): { user: number; system: number } => {
  if (serverAsProcess) return cpuSeconds(server.pid);
  const u = process.cpuUsage();
  return { user: u.user / 1e6, system: u.system / 1e6 };
};
const api = new Api(server.url, server.apiToken, server.controllerToken);
try {
  const jobId = await api.submit(jobSpec({
    limits: { timeoutMs: 600_000, cpus: 1, memoryMiB: 512, diskMiB: 1024, pids: 256, logMiB: sizeMiB + 16 },
    steps: [{ name: "flood", run: producer }],
  }));
  const token = await api.registrationToken();
  const tokenFile = join(root, "token");
  writeFileSync(tokenFile, token, { mode: 0o600 });
  mkdirSync(join(root, "slot"), { mode: 0o711 });
  const slot = String(30_000 + randomInt(30_000));
  const socket = join(root, "host.sock");
  const runner = spawn(process.execPath, [
    ...(profDir ? ["--cpu-prof", "--cpu-prof-dir", profDir] : []), cli,
    ...(asProcess
      ? ["runner", "--server", server.url, "--registration-token-file", tokenFile, "--work-dir", join(root, "slot", "work"), "--slot", slot, "--idle-timeout", "60s"]
      : ["runner-host", "--socket", socket, "--work-root", join(root, "slot"), "--slot-base", slot, "--slots", "1", "--host-id", "bench", "--max-sessions", "2", "--runner-idle-timeout", "60s"]),
    "--isolation", isolation, "--log-level", "warn",
  ], { stdio: ["ignore", "ignore", "inherit"] });
  const pid = runner.pid ?? 0;
  if (!asProcess) {
    // As a controller does: connect, then launch one session with the registration token.
    for (let i = 0; ; i++) {
      const ok = await new Promise<boolean>((resolve) => {
        const c = connect(socket, () => {
          c.write(`${JSON.stringify({ op: "launch", id: "bench-1", registrationToken: token, serverUrl: server.url, labels: [] })}\n`);
          c.on("error", () => {});
          c.on("data", (b: Buffer) => {
            if (b.toString().includes('"refused"')) process.stderr.write(`runner host: ${b.toString()}`);
          });
          resolve(true);
        }).once("error", () => resolve(false));
      });
      if (ok) break;
      if (i > 600) throw new Error("runner host did not listen");
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  let peakKiB = 0;
  const rss = setInterval(() => (peakKiB = Math.max(peakKiB, statusKiB(pid, "VmRSS"))), 20);
  const exited = new Promise<number | null>((resolve) => runner.once("exit", (code) => resolve(code)));
  const idleKiB = await (async () => {
    await api.waitFor(jobId, (j) => j.state !== "queued", "leased", 120_000);
    return statusKiB(pid, "VmRSS");
  })();
  await api.waitFor(jobId, (j) => j.state === "running", "running", 120_000);
  const t0 = performance.now();
  const runnerCpu0 = cpuSeconds(pid);
  const serverCpu0 = serverCpu();
  let held = 0;
  while (held < total) {
    held = (await api.job(jobId)).log.bytes;
    await new Promise((r) => setTimeout(r, 50)); // one slow poller: the check must not load the server it measures
  }
  const runnerS = (performance.now() - t0) / 1000;
  const runnerCpu1 = cpuSeconds(pid);
  const runnerUserS = runnerCpu1.user - runnerCpu0.user;
  const runnerSystemS = runnerCpu1.system - runnerCpu0.system;
  const serverCpu1 = serverCpu();
  const serverSystemS = serverCpu1.system - serverCpu0.system;
  const serverCpuS = serverCpu1.user - serverCpu0.user + serverSystemS;
  const job = await api.waitDone(jobId, 120_000);
  const puts = await logPutStats(server.url);
  clearInterval(rss);
  const hwmKiB = statusKiB(pid, "VmHWM");
  if (!asProcess) runner.kill("SIGTERM"); // the host retires and exits
  const code = await exited;
  process.stdout.write(JSON.stringify({
    bench: "runner-log-throughput",
    bytes: total,
    runner: {
      as: asProcess ? "runner process" : "runner-host session", isolation, seconds: +runnerS.toFixed(3), mbPerS: +(total / 1e6 / runnerS).toFixed(1), cpuSeconds: +(runnerUserS + runnerSystemS).toFixed(2), systemCpuSeconds: +runnerSystemS.toFixed(2),
      rssAtLeaseMiB: +(idleKiB / 1024).toFixed(1), peakRssMiB: +(peakKiB / 1024).toFixed(1), rssGrowthMiB: +((peakKiB - idleKiB) / 1024).toFixed(1), vmHwmMiB: +(hwmKiB / 1024).toFixed(1),
      exitCode: code, jobState: job.state, logBytes: job.log.bytes,
    },
    server: { as: serverAsProcess ? "deltaci server child" : "this process", cpuSeconds: +serverCpuS.toFixed(2), systemCpuSeconds: +serverSystemS.toFixed(2), durability, logPuts: puts.count, meanPutKiB: +(total / 1024 / Math.max(1, puts.count)).toFixed(0), putSecondsTotal: +puts.seconds.toFixed(2) },
    loadAverage1m: loadavg()[0],
    baselinePipeCat: { seconds: +baselineS.toFixed(3), mbPerS: +(total / 1e6 / baselineS).toFixed(1) },
    goals: { mbPerS: 200, rssGrowthMiB: 64 },
    note: "MB/s = 1e6 bytes/s, from the job turning running until the server holds every byte; RSS of the runner (host) process: at lease, sampled peak during the job, growth = peak − at lease",
  }) + "\n");
} finally {
  await api.close();
  await server.close();
  rmSync(root, { recursive: true, force: true });
}
