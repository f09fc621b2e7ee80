/**
 * The upload half of a log flood, without the step or its pipe: a spool already holding N MiB
 * is sent by the runner's LogUploader (this process) to a `deltaci server` child (its own
 * process, so CPU is read apart from /proc), until the server has committed every byte. Run
 * for each chunk size, alternating, so all see the same load; the machine is shared, so
 * wall-clock varies with the load average printed beside it, CPU seconds less.
 * Prints one JSON document. Usage: tsx bench/log-upload-path.ts [MiB] [--durability full|normal] [--rounds N]
 */
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { systemClock } from "../src/base/clock.ts";
import { HttpClient } from "../src/client/http.ts";
import { RetryPolicy } from "../src/client/retry-policy.ts";
import { RunnerClient } from "../src/client/runner-client.ts";
import { LogSpool } from "../src/logs/log-spool.ts";
import { LogUploader } from "../src/logs/log-uploader.ts";
import { Api, jobSpec } from "../test/support/runner-harness.ts";
import { spawnDeltaci } from "./lib/protocol-client.ts";

const MiB = 1024 * 1024;
const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? (args.splice(i, 2)[1] ?? dflt) : dflt;
};
const durability = opt("--durability", "full") === "normal" ? "normal" : "full";
const rounds = Number(opt("--rounds", "2"));
const sizeMiB = Number(args[0] ?? 200);
const chunkSizesMiB = [1, 4];

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "").split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const server = await spawnDeltaci(["--durability", durability, "--log-limit", `${sizeMiB + 16}Mi`, "--lease-ttl", "60s"]);
const api = new Api(server.url, server.apiToken, server.controllerToken);
const dir = await mkdtemp(join(tmpdir(), "deltaci-bench-upload-"));
const http = new HttpClient(server.url, { timeoutMs: 30_000 });
const client = new RunnerClient({ http, retry: new RetryPolicy({ clock: systemClock }), requestTimeoutMs: 30_000 });
const line = Buffer.from("2026-11-28T03:00:00.000Z INFO build step output line with some ordinary text 0123456789\n");
const block = Buffer.concat(Array.from({ length: Math.ceil(65_536 / line.length) }, () => line)).subarray(0, 65_536);

async function once(chunkMiB: number): Promise<Record<string, number>> {
  const jobId = await api.submit(jobSpec({ limits: { timeoutMs: 600_000, cpus: 1, memoryMiB: 512, diskMiB: 1024, pids: 256, logMiB: sizeMiB + 16 }, steps: [{ name: "s", run: "true" }] }));
  const reg = await client.register(await api.registrationToken(), {
    name: "bench", version: "0", capabilities: { os: "linux", arch: process.arch, labels: [], toolchains: {}, resources: { cpus: 1, memoryMiB: 1024, diskMiB: 1024 }, isolation: ["process"] },
  });
  let lease = null;
  while (lease === null) lease = await client.lease(reg.sessionToken, 5_000);
  if (lease.jobId !== jobId) throw new Error("leased another job");
  const spool = new LogSpool(join(dir, `${jobId}.spool`), (sizeMiB + 16) * MiB);
  for (let n = 0; n < sizeMiB * MiB; n += block.length) spool.append(block);
  const token = lease.leaseToken;
  const uploader = new LogUploader({
    spool, clock: systemClock, flushIntervalMs: 250, flushBytes: 256 * 1024, chunkBytes: chunkMiB * MiB,
    sink: { put: (start, bytes, signal) => client.putLog(token, start, bytes, { signal, maxAttempts: 4 }) },
  });
  const serverCpu0 = cpuSeconds(server.proc.pid ?? 0);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const done = await uploader.finish(AbortSignal.timeout(600_000));
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const serverCpu = cpuSeconds(server.proc.pid ?? 0) - serverCpu0;
  spool.close();
  await rm(spool.path, { force: true });
  if (!done.complete) throw new Error(`upload incomplete: ${done.bytes} of ${spool.size}`);
  return {
    chunkMiB, seconds: +seconds.toFixed(3), mbPerS: +(spool.size / 1e6 / seconds).toFixed(1),
    uploaderCpuSeconds: +((cpu.user + cpu.system) / 1e6).toFixed(2), serverCpuSeconds: +serverCpu.toFixed(2), loadAverage1m: +(loadavg()[0] ?? 0).toFixed(2),
  };
}

try {
  const runs: Array<Record<string, number>> = [];
  for (let r = 0; r < rounds; r++) for (const c of chunkSizesMiB) runs.push(await once(c));
  process.stdout.write(JSON.stringify({
    bench: "log-upload-path", bytes: sizeMiB * MiB, durability, runs,
    note: "LogUploader (this process, 2 PUTs in flight) → deltaci server child; spool prefilled; MB/s = 1e6 bytes/s until the server committed every byte; CPU from process.cpuUsage / /proc",
  }) + "\n");
} finally {
  await http.close();
  await api.close();
  await server.stop();
  await rm(dir, { recursive: true, force: true });
}
