/**
 * Nothing of a job run outlives `runJob` (issue 10: many runs in one long-lived runner host).
 * The server runs in a child process, so this process's heap holds only the runner's side. Jobs
 * with distinct secrets run one after another in this process (one completes, one is canceled
 * mid-step); after each, the host's stop signal has no listener left and the job dir is gone;
 * after all, a heap snapshot holds none of their secrets, lease tokens or session tokens.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { getEventListeners } from "node:events";
import { existsSync, mkdirSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setFlagsFromString, writeHeapSnapshot } from "node:v8";
import { runInNewContext } from "node:vm";
import { systemClock } from "../src/base/clock.ts";
import { HttpClient } from "../src/client/http.ts";
import { RetryPolicy } from "../src/client/retry-policy.ts";
import { RunnerClient } from "../src/client/runner-client.ts";
import { nullLogger } from "../src/runner/ports.ts";
import { runJob } from "../src/runner/run-job.ts";
import { ProcessSandboxFactory } from "../src/sandbox/process/process-sandbox.ts";
import { slotInfo } from "../src/sandbox/slots.ts";
import { Api, jobSpec } from "./support/runner-harness.ts";
import { waitForReadyUrl } from "./support/ready-url.ts";

const ROOT = join(import.meta.dirname, "..");

/** What the snapshot must not hold, kept reversed: a copy of it in this test would be found itself. */
type Probe = Buffer;
const probe = (s: string): Probe => Buffer.from(s).reverse();
const unprobe = (p: Probe): Buffer => Buffer.from(p).reverse();

async function spawnServer(dataDir: string): Promise<{ proc: ChildProcess; url: string }> {
  const proc = spawn(process.execPath, [join(ROOT, "bin", "deltaci.js"), "server", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--lease-ttl", "30s", "--log-level", "warn"], {
    cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, DELTACI_API_TOKEN: "", DELTACI_CONTROLLER_TOKEN: "" },
  });
  return { proc, url: await waitForReadyUrl(proc) };
}

function forceGc(): void {
  setFlagsFromString("--expose-gc");
  (runInNewContext("gc") as () => void)();
}

void test("a job run leaves no listener, file, secret or token behind", async () => {
  const dir = await mkdtemp(join(tmpdir(), "deltaci-runjob-leaks-"));
  const server = await spawnServer(join(dir, "server"));
  const api = new Api(server.url, (await readFile(join(dir, "server", "api-token"), "utf8")).trim(), (await readFile(join(dir, "server", "controller-token"), "utf8")).trim());
  const index = 200 + Math.floor(Math.random() * 800);
  const slot = { ...slotInfo(index, join(dir, "slots")), workDir: join(dir, "slots", "work") };
  mkdirSync(slot.workDir, { recursive: true, mode: 0o711 });
  const http = new HttpClient(server.url, { timeoutMs: 10_000 });
  const client = new RunnerClient({ http, retry: new RetryPolicy({ clock: systemClock, baseMs: 50, maxMs: 500 }), requestTimeoutMs: 10_000 });
  const factory = new ProcessSandboxFactory({ clock: systemClock, logger: nullLogger });
  const host = new AbortController(); // the runner host's stop signal: outlives every run
  const probes: Probe[] = [];
  try {
    // Each run in its own function: its locals are off the stack when the snapshot is taken.
    const runOne = async (kind: "completes" | "canceled") => {
      const secret = probe(`leak-probe-${randomBytes(12).toString("hex")}`);
      probes.push(secret);
      const jobId = await api.submit(jobSpec({
        name: `leak-${kind}`,
        steps: [{ name: "s", run: kind === "completes" ? 'echo "$PROBE"' : 'echo "$PROBE"; sleep 30' }],
      }), { PROBE: unprobe(secret).toString() });
      const reg = await client.register(await api.registrationToken(), {
        name: "leak-test", version: "0.1.0",
        capabilities: { os: "linux", arch: process.arch, labels: [], toolchains: {}, resources: { cpus: 1, memoryMiB: 1024, diskMiB: 1024 }, isolation: ["process"] },
      });
      probes.push(probe(reg.sessionToken));
      let lease = await client.lease(reg.sessionToken, 5_000);
      for (let i = 0; lease === null && i < 10; i++) lease = await client.lease(reg.sessionToken, 5_000);
      assert.ok(lease, "a lease");
      assert.equal(lease.jobId, jobId);
      probes.push(probe(lease.leaseToken));
      if (kind === "canceled") void api.waitFor(jobId, (j) => j.state === "running", "running").then(() => api.cancel(jobId, "graceful")).catch(() => {});
      const jobDir = join(slot.workDir, "runner");
      const res = await runJob(lease, {
        client, sandboxFactory: factory, clock: systemClock, logger: nullLogger, slot, jobDir, signal: host.signal,
        timings: { flushIntervalMs: 50, flushBytes: 256 * 1024, chunkBytes: 1024 * 1024, cancelGraceMs: 1_000, tailUploadMs: 5_000, disposeMs: 60_000 },
      });
      lease = null;
      assert.equal(res.report, kind === "completes" ? "completed" : "canceled");
      assert.equal(getEventListeners(host.signal, "abort").length, 0, "no listener left on the host's signal");
      assert.equal(existsSync(jobDir), false, "the job dir (spool, staging) is gone");
      const log = (await api.log(jobId)).toString();
      assert.match(log, /\*\*\*/, "the secret was printed, masked");
      assert.ok(!log.includes(unprobe(secret).toString()));
    };
    await runOne("completes");
    await runOne("canceled");
    forceGc();
    const file = writeHeapSnapshot(join(dir, "runner.heapsnapshot"));
    const heap = await readFile(file);
    for (const p of probes) assert.equal(heap.indexOf(unprobe(p)), -1, `the heap still holds ${unprobe(p).subarray(0, 14).toString()}…`);
  } finally {
    await http.close().catch(() => {});
    await api.close().catch(() => {});
    await factory.close().catch(() => {});
    server.proc.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  }
});
