/** Controller endpoints: demand grouped by requirement set (long poll), capacity → unschedulable. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type Json } from "./server-harness.ts";

const pool = (over: Json = {}) => ({ name: "local", os: "linux", arch: "x64", labels: ["linux"], resources: { cpus: 2, memoryMiB: 4096, diskMiB: 8192 }, max: 4, ...over });

void test("demand groups queued and running jobs by requirement set and long-polls on version", async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000 });
  try {
    const first = await s.ctl("GET", "/v1/controller/demand");
    assert.equal(first.status, 200);
    assert.deepEqual(first.body.demand, []);
    const v0 = first.body.version as number;
    const held = s.ctl("GET", `/v1/controller/demand?since=${v0}&waitMs=60000`);
    await s.submit();
    const woke = await held;
    assert.notEqual(woke.body.version, v0);
    await s.submit();
    await s.submit({ runsOn: { labels: ["linux", "big"] } });
    assert.ok(await s.lease(await s.runner(), 1000));
    const d = (await s.ctl("GET", "/v1/controller/demand")).body.demand as Json[];
    const plain = d.find((g) => g.requirements.labels.length === 1);
    const big = d.find((g) => g.requirements.labels.includes("big"));
    assert.deepEqual(plain, { requirements: { os: null, arch: null, labels: ["linux"], resources: { cpus: 1, memoryMiB: 512, diskMiB: 1024 } }, queued: 1, running: 1, unschedulable: 0 });
    assert.equal(big.queued, 1);
    const now = (await s.ctl("GET", "/v1/controller/demand")).body.version;
    const quick = await s.ctl("GET", `/v1/controller/demand?since=${now}&waitMs=50`);
    assert.equal(quick.body.version, now, "no change: answered after waitMs with the same version");
  } finally {
    await s.close();
  }
});

void test("declared capacity marks jobs no pool can serve as unschedulable, and clears it", async () => {
  const s = await startTestServer();
  try {
    const gpu = await s.submit({ runsOn: { labels: ["gpu"] } });
    const ok = await s.submit({ runsOn: { labels: ["linux"] } });
    assert.equal((await s.status(gpu)).unschedulable, null, "nothing declared: nothing is unschedulable");
    const put = await s.ctl("PUT", "/v1/controller/capacity", { pools: [pool()] });
    assert.equal(put.status, 200);
    assert.equal(put.body.unschedulable, 1);
    assert.match((await s.status(gpu)).unschedulable, /gpu/);
    assert.equal((await s.status(ok)).unschedulable, null);
    const huge = await s.submit({ limits: { timeoutMs: 1000, cpus: 16, memoryMiB: 512, diskMiB: 10, pids: 10, logMiB: 1 } });
    assert.match((await s.status(huge)).unschedulable, /16 cpus/);
    const d = (await s.ctl("GET", "/v1/controller/demand")).body.demand as Json[];
    assert.equal(d.reduce((n, g) => n + (g.unschedulable ?? 0), 0), 2);
    const jobs = (await s.api("GET", "/v1/jobs?state=queued&limit=10")).body.jobs as Json[];
    assert.equal(jobs.length, 3);
    await s.ctl("PUT", "/v1/controller/capacity", { pools: [pool(), pool({ name: "gpu", labels: ["linux", "gpu"], resources: { cpus: 32, memoryMiB: 65536, diskMiB: 65536 } })] });
    assert.equal((await s.status(gpu)).unschedulable, null);
    assert.equal((await s.status(huge)).unschedulable, null);
  } finally {
    await s.close();
  }
});

void test("healthz and metrics", async () => {
  const s = await startTestServer();
  try {
    assert.equal((await s.call("GET", "/healthz")).status, 200);
    await s.submit();
    const m = (await s.call("GET", "/metrics")).raw.toString();
    for (const name of ["deltaci_queue_depth 1", "deltaci_active_leases", "deltaci_lease_expiries_total", "deltaci_retries_total", "deltaci_log_bytes_total", "deltaci_http_request_duration_seconds_bucket"]) {
      assert.ok(m.includes(name), `metrics has ${name}`);
    }
  } finally {
    await s.close();
  }
});
