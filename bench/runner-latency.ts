/**
 * Runner latencies and idle footprint, with the runner as a child process (the CLI bundled,
 * `--isolation process`) and the server in this process:
 *  - log visibility: a step prints lines stamped with the wall clock; we follow the job log API
 *    and take arrival time − print time per line (same machine clock);
 *  - cancel latency: `POST /v1/jobs/:id/cancel` until the step's process (which honours SIGTERM)
 *    is gone, several runs;
 *  - idle RSS: VmRSS of a registered runner waiting for a job.
 * Prints one JSON document. Usage: tsx bench/runner-latency.ts [runs]
 */
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { build } from "esbuild";
import { startServer } from "../src/server/index.ts";
import { Api, jobSpec } from "../test/support/runner-harness.ts";

const runs = Number(process.argv[2] ?? 10);
const repo = join(import.meta.dirname, "..");
const cli = join(repo, "dist", "runner-bench", "cli.mjs");
await build({ entryPoints: [join(repo, "src", "cli", "main.ts")], outfile: cli, bundle: true, platform: "node", format: "esm", target: "node20", packages: "external", logLevel: "warning" });

const wallMs = () => performance.timeOrigin + performance.now();
const p = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return +(s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN).toFixed(1);
};
const stats = (xs: number[]) => ({ n: xs.length, p50: p(xs, 0.5), p90: p(xs, 0.9), max: p(xs, 1) });
const statusKiB = (pid: number, field: string) => {
  try {
    return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
  } catch {
    return 0;
  }
};
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const root = mkdtempSync(join(tmpdir(), "deltaci-bench-latency-"));
chmodSync(root, 0o711);
const server = await startServer({ dataDir: join(root, "server"), port: 0, host: "127.0.0.1", durability: "normal" });
const api = new Api(server.url, server.apiToken, server.controllerToken);
const children: ChildProcess[] = [];
let slot = 0;

async function startRunner(): Promise<ChildProcess> {
  const n = slot++;
  const tokenFile = join(root, `token-${n}`);
  writeFileSync(tokenFile, await api.registrationToken(), { mode: 0o600 });
  mkdirSync(join(root, `slot-${n}`), { mode: 0o711 });
  const child = spawn(process.execPath, [cli, "runner", "--server", server.url, "--registration-token-file", tokenFile, "--isolation", "process",
    "--work-dir", join(root, `slot-${n}`, "work"), "--slot", String(20 + n), "--idle-timeout", "120s", "--log-level", "error"], { stdio: ["ignore", "ignore", "inherit"] });
  children.push(child);
  return child;
}

try {
  // Idle RSS: a registered runner waiting in its lease long poll.
  const idle = await startRunner();
  await new Promise((r) => setTimeout(r, 3000));
  const idleRssMiB = +(statusKiB(idle.pid ?? 0, "VmRSS") / 1024).toFixed(1);

  // Log visibility: the idle runner takes this job.
  const lines = 20;
  const visJob = await api.submit(jobSpec({ steps: [{ name: "ticks", run: `for i in $(seq 1 ${lines}); do echo "tick $(date +%s%3N)"; sleep 0.2; done` }] }));
  const follow = await api.http.raw({ method: "GET", path: `/v1/jobs/${visJob}/log?follow=1`, token: api.apiToken, timeoutMs: 120_000 });
  const visibility: number[] = [];
  let buf = "";
  for await (const chunk of follow.body) {
    const now = wallMs();
    buf += (chunk as Buffer).toString();
    const parts = buf.split("\n");
    buf = parts.pop() ?? "";
    for (const l of parts) {
      const m = /^tick (\d+)$/.exec(l);
      if (m) visibility.push(now - Number(m[1]));
    }
  }
  await api.waitDone(visJob, 60_000);

  // Cancel latency: one runner per run; the step honours SIGTERM.
  const cancel: number[] = [];
  for (let i = 0; i < runs; i++) {
    const jobId = await api.submit(jobSpec({ steps: [{ name: "sleeper", run: 'echo "pid=$$"; exec sleep 300' }] }));
    await startRunner();
    let pid = 0;
    while (pid === 0) {
      const m = /pid=(\d+)/.exec((await api.log(jobId)).toString());
      if (m) pid = Number(m[1]);
      else await new Promise((r) => setTimeout(r, 20));
    }
    const t0 = performance.now();
    await api.cancel(jobId, "graceful");
    while (alive(pid)) await new Promise((r) => setImmediate(r));
    cancel.push(performance.now() - t0);
    await api.waitDone(jobId, 60_000);
  }
  process.stdout.write(JSON.stringify({
    bench: "runner-latency",
    logVisibilityMs: stats(visibility),
    cancelToProcessGoneMs: stats(cancel),
    idleRunnerRssMiB: idleRssMiB,
    goals: { logVisibilityP50Ms: 300, cancelP50Ms: 50, idleRssMiB: 60 },
    note: "runner = the CLI bundled (all subcommands), --isolation process; server in the bench process",
  }) + "\n");
} finally {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await api.close();
  await server.close();
  rmSync(root, { recursive: true, force: true });
}
