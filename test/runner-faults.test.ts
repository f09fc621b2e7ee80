/**
 * The runner under network faults, through a TCP fault proxy of our own between it and the real
 * server: latency, connection resets, a partition shorter than the lease ttl, a server restart,
 * and a partition longer than the ttl (the runner gives up; the job is retried elsewhere).
 * Logs must arrive byte-exact: exactly the masked output, no byte lost or duplicated.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { systemClock } from "../src/base/clock.ts";
import { isDeltaError } from "../src/base/errors.ts";
import { HttpClient } from "../src/client/http.ts";
import { RetryPolicy } from "../src/client/retry-policy.ts";
import { RunnerClient } from "../src/client/runner-client.ts";
import { ProcessSandboxFactory } from "../src/sandbox/process/process-sandbox.ts";
import { startServer } from "../src/server/index.ts";
import { FaultProxy } from "./support/fault-proxy.ts";
import { Api, jobSpec, memoryLogger, nonceOf, parseMarker, runInProcess, startHarness, type Harness } from "./support/runner-harness.ts";

const factory = new ProcessSandboxFactory({ clock: systemClock, logger: { info: () => {}, warn: () => {} } });
const SECRET = "f4ult-Pr0xy-Secret";
const LINES = 6000;

/** A step printing LINES numbered lines (each with the secret), pausing now and then. */
const chattyStep = {
  name: "chatty",
  run: `for i in $(seq 1 ${LINES}); do printf 'line %d %080d %s\\n' "$i" "$i" "$MY_SECRET"; if [ $((i % 600)) = 0 ]; then sleep 0.25; fi; done`,
};
const expectedOutput = Array.from({ length: LINES }, (_, k) => `line ${k + 1} ${String(k + 1).padStart(80, "0")} ***\n`).join("");

/** The output between the step's start and end markers. */
function stepOutput(log: Buffer): string {
  const lines = log.toString().split("\n");
  const nonce = nonceOf(lines[0] ?? "") ?? "";
  const start = lines.findIndex((l) => parseMarker(l, nonce)?.kind === "step-start");
  const end = lines.findIndex((l) => parseMarker(l, nonce)?.kind === "step-end");
  assert.ok(start >= 0 && end > start, "step markers present");
  return lines.slice(start + 1, end).map((l) => `${l}\n`).join("");
}

async function waitLogBytes(api: Api, jobId: string, atLeast: number): Promise<void> {
  await api.waitFor(jobId, (j) => j.log.bytes >= atLeast, `${atLeast} log bytes`);
}

void describe("runner under network faults", () => {
  let h: Harness;
  let proxy: FaultProxy;
  let proxyUrl: string;

  before(async () => {
    h = await startHarness({ leaseTtlMs: 6000, heartbeatIntervalMs: 1000 });
    proxy = new FaultProxy(h.server.url);
    proxyUrl = await proxy.start();
  });
  after(async () => {
    await proxy?.close();
    await h?.close();
  });

  void it("latency, resets and a partition shorter than the ttl: the job goes on, the log is byte-exact", async () => {
    proxy.setLatency(3);
    proxy.setResetAfter(300_000);
    const jobId = await h.api.submit(jobSpec({ steps: [chattyStep] }), { MY_SECRET: SECRET });
    const logger = memoryLogger();
    const running = runInProcess(h, factory, { serverUrl: proxyUrl, requestTimeoutMs: 1000, logger });
    await waitLogBytes(h.api, jobId, 100_000);
    proxy.partition(true);
    await new Promise((r) => setTimeout(r, 2000));
    proxy.partition(false);
    const exit = await running;
    proxy.setLatency(0);
    proxy.setResetAfter(0);
    assert.equal(exit.reason, "reported", logger.lines.join("\n"));
    const job = await h.api.waitDone(jobId, 30_000);
    assert.equal(job.state, "succeeded");
    assert.equal(job.attempts.length, 1);
    const log = await h.api.log(jobId);
    assert.equal(job.log.bytes, log.length);
    assert.equal(stepOutput(log), expectedOutput);
    assert.ok(proxy.stats.resets > 0, "resets were injected");
  });

  void it("the server restarts mid-job: the job completes and the log is byte-exact", async () => {
    const jobId = await h.api.submit(jobSpec({ steps: [chattyStep] }), { MY_SECRET: SECRET });
    const logger = memoryLogger();
    const running = runInProcess(h, factory, { serverUrl: proxyUrl, requestTimeoutMs: 1000, logger });
    await waitLogBytes(h.api, jobId, 100_000);
    const { dataDir, apiToken, controllerToken } = h.server;
    await h.server.close();
    proxy.resetAll();
    const restarted = await startServer({ dataDir, apiToken, controllerToken, port: 0, host: "127.0.0.1", leaseTtlMs: 6000, heartbeatIntervalMs: 1000, sweepIntervalMs: 100, durability: "normal" });
    h.server = restarted;
    await h.api.close();
    h.api = new Api(restarted.url, apiToken, controllerToken);
    proxy.retarget(restarted.url);
    const exit = await running;
    assert.equal(exit.reason, "reported", logger.lines.join("\n"));
    const job = await h.api.waitDone(jobId, 30_000);
    assert.equal(job.state, "succeeded");
    assert.equal(stepOutput(await h.api.log(jobId)), expectedOutput);
  });

  void it("a partition longer than the ttl: the runner gives up without completing; the job is retried and succeeds", async () => {
    const jobId = await h.api.submit(jobSpec({
      steps: [{ name: "once", run: 'echo "attempt $DELTACI_ATTEMPT"; if [ "$DELTACI_ATTEMPT" = 1 ]; then sleep 120; fi' }],
    }));
    const logger = memoryLogger();
    const first = runInProcess(h, factory, { serverUrl: proxyUrl, requestTimeoutMs: 1000, logger });
    await h.api.waitFor(jobId, (j) => j.state === "running", "running");
    proxy.partition(true);
    const exit = await first;
    proxy.partition(false);
    assert.equal(exit.code, 1);
    assert.ok(exit.reason === "lost" || exit.reason === "stale", exit.reason);
    await h.api.waitFor(jobId, (j) => j.attempts[0]?.state === "lost", "attempt 1 lost");
    const second = await runInProcess(h, factory);
    assert.equal(second.reason, "reported");
    const job = await h.api.waitDone(jobId, 30_000);
    assert.equal(job.state, "succeeded");
    assert.deepEqual(job.attempts.map((a) => a.state), ["lost", "succeeded"]);
    assert.match((await h.api.log(jobId)).toString(), /attempt 2/);
  });

  void it("a stale lease's complete and heartbeat are refused with E_LEASE_STALE", async () => {
    const jobId = await h.api.submit(jobSpec({ steps: [{ name: "x", run: "true" }] }));
    const client = new RunnerClient({ http: new HttpClient(h.server.url, { timeoutMs: 5000 }), retry: new RetryPolicy({ clock: systemClock, baseMs: 10, maxMs: 50 }), requestTimeoutMs: 5000 });
    const reg = await client.register(await h.api.registrationToken(), {
      name: "stale", version: "0", capabilities: { os: "linux", arch: process.arch, labels: [], toolchains: {}, resources: { cpus: 8, memoryMiB: 8192, diskMiB: 8192 }, isolation: ["process"] },
    });
    const lease = await client.lease(reg.sessionToken, 10_000);
    assert.equal(lease?.jobId, jobId);
    await h.api.waitFor(jobId, (j) => j.attempts[0]?.state === "lost", "lease expiry");
    const body = { result: "succeeded" as const, exitCode: 0, failure: null, steps: [], artifacts: [], log: { bytes: 0, sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" } };
    await assert.rejects(client.complete(lease.leaseToken, body), (err) => isDeltaError(err, "E_LEASE_STALE"));
    await assert.rejects(client.heartbeat(lease.leaseToken, { state: "running", step: 0, logBytes: 0 }), (err) => isDeltaError(err, "E_LEASE_STALE"));
    await client.close();
    await h.api.cancel(jobId, "hard");
  });
});
