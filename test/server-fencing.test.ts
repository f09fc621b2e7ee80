/** Fencing and claims: stale lease tokens change nothing; one job, one winner; long polls wake on submit. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { completeBody, JumpClock, startTestServer } from "./server-harness.ts";

void test("after expiry the old lease token gets 409 everywhere and never changes the job", async () => {
  const clock = new JumpClock();
  const s = await startTestServer({ leaseTtlMs: 30_000, maxAttempts: 3, clock });
  try {
    const jobId = await s.submit();
    const old = await s.lease(await s.runner(), 1000);
    assert.ok(old);
    assert.equal((await s.log(old.leaseToken, 0, "first attempt\n")).status, 202);
    clock.advance(31_000);
    await s.waitFor(jobId, (st) => st.attempts.length === 2 && st.attempts[0].state === "lost");
    const fresh = await s.lease(await s.runner(), 5000);
    assert.ok(fresh);
    assert.equal(fresh.attempt, 2);
    assert.equal((await s.heartbeat(fresh.leaseToken)).status, 200);
    const before = await s.status(jobId);

    const hb = await s.heartbeat(old.leaseToken);
    const log = await s.log(old.leaseToken, 14, "late\n");
    const art = await s.call("POST", "/v1/runner/artifacts", { token: old.leaseToken, json: { name: "a.txt", size: 1, sha256: "a".repeat(64) } });
    const done = await s.complete(old.leaseToken, completeBody({ log: { bytes: 14, sha256: "0".repeat(64) } }));
    const ack = await s.complete(old.leaseToken, {}, "/v1/runner/cancel-ack");
    const src = await s.call("GET", "/v1/runner/source", { token: old.leaseToken });
    for (const [name, r] of Object.entries({ hb, log, art, done, ack, src })) {
      assert.equal(r.status, 409, `${name}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error.code, "E_LEASE_STALE", name);
    }
    const after = await s.status(jobId);
    assert.equal(after.state, before.state);
    assert.deepEqual(after.attempts, before.attempts);
    assert.deepEqual(after.transitions, before.transitions);
    assert.equal(after.log.bytes, 0, "the new attempt's log is untouched");
    // the new attempt still works
    assert.equal((await s.complete(fresh.leaseToken)).status, 200);
    assert.equal((await s.status(jobId)).state, "succeeded");
  } finally {
    await s.close();
  }
});

void test("a lease token acts only on its own attempt", async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000 });
  try {
    await s.submit();
    await s.submit();
    const a = await s.lease(await s.runner(), 1000);
    const b = await s.lease(await s.runner(), 1000);
    assert.ok(a && b);
    assert.notEqual(a.jobId, b.jobId);
    const created = await s.call("POST", "/v1/runner/artifacts", { token: a.leaseToken, json: { name: "x.bin", size: 3, sha256: "b".repeat(64) } });
    assert.equal(created.status, 201);
    const url = created.body.upload.url as string;
    const foreign = await s.call("PUT", url, { token: b.leaseToken, body: Buffer.from("abc"), headers: { "content-type": "application/octet-stream", "content-range": "bytes 0-2/3" } });
    assert.equal(foreign.status, 404, "another attempt's token cannot reach this upload");
    assert.equal((await s.call("HEAD", url, { token: b.leaseToken })).status, 404);
    assert.equal((await s.complete(b.leaseToken, completeBody({ artifacts: [created.body.artifactId] }))).status, 400, "cannot claim another attempt's artifact");
  } finally {
    await s.close();
  }
});

void test("many runners racing for one job: exactly one wins", async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000 });
  try {
    const sessions = await Promise.all(Array.from({ length: 24 }, () => s.runner()));
    const waits = sessions.map((t) => s.lease(t, 3000));
    const jobId = await s.submit();
    const results = await Promise.all(waits);
    const winners = results.filter((l) => l !== null);
    assert.equal(winners.length, 1);
    assert.equal(winners[0]?.jobId, jobId);
    const st = await s.status(jobId);
    assert.equal(st.attempts.length, 1);
    assert.equal(st.attempts[0].state, "leased");
  } finally {
    await s.close();
  }
});

void test("many runners racing for one queued job without waiting: exactly one wins", async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000 });
  try {
    const jobId = await s.submit();
    const sessions = await Promise.all(Array.from({ length: 24 }, () => s.runner()));
    const results = await Promise.all(sessions.map((t) => s.lease(t, 0)));
    const winners = results.filter((l) => l !== null);
    assert.equal(winners.length, 1);
    assert.equal(winners[0]?.jobId, jobId);
  } finally {
    await s.close();
  }
});

void test("a waiting lease is answered when a matching job is submitted, not one that does not match", async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000 });
  try {
    const session = await s.runner({ labels: ["linux", "gpu"] });
    const waiting = s.lease(session, 60_000);
    const other = await s.submit({ runsOn: { labels: ["windows"] } });
    const big = await s.submit({ limits: { timeoutMs: 1000, cpus: 64, memoryMiB: 512, diskMiB: 10, pids: 10, logMiB: 1 } });
    const wanted = await s.submit({ runsOn: { labels: ["gpu"] } });
    const l = await waiting;
    assert.ok(l);
    assert.equal(l.jobId, wanted);
    assert.equal((await s.status(other)).state, "queued");
    assert.equal((await s.status(big)).state, "queued");
    const again = await s.call("POST", "/v1/runner/lease", { token: session, json: { waitMs: 0 } });
    assert.equal(again.status, 409);
    assert.equal(again.body.error.code, "E_SESSION_USED");
  } finally {
    await s.close();
  }
});

void test("lease long poll ends with 204 when nothing arrives, and os/arch must match", async () => {
  const s = await startTestServer();
  try {
    await s.submit({ runsOn: { labels: [], os: "windows" } });
    const session = await s.runner();
    assert.equal(await s.lease(session, 200), null);
    const armJob = await s.submit({ runsOn: { labels: [], arch: "arm64" } });
    assert.equal(await s.lease(session, 0), null);
    const arm = await s.runner({ arch: "arm64" });
    assert.equal((await s.lease(arm, 0))?.jobId, armJob);
  } finally {
    await s.close();
  }
});

void test("registration and session tokens are one-shot; registration labels bound the runner's labels", async () => {
  const s = await startTestServer();
  try {
    const reg = await s.ctl("POST", "/v1/controller/registrations", { count: 2, labels: ["linux"], ttlMs: 60_000 });
    assert.equal(reg.status, 201);
    assert.equal(reg.body.tokens.length, 2);
    const body = { name: "r", version: "1", capabilities: { os: "linux", arch: "x64", labels: ["linux"], toolchains: {}, resources: { cpus: 1, memoryMiB: 1, diskMiB: 1 }, isolation: ["oci"] } };
    assert.equal((await s.call("POST", "/v1/runner/register", { token: reg.body.tokens[0], json: body })).status, 201);
    const reuse = await s.call("POST", "/v1/runner/register", { token: reg.body.tokens[0], json: body });
    assert.equal(reuse.status, 401);
    assert.equal(reuse.body.error.code, "E_TOKEN_INVALID");
    const greedy = await s.call("POST", "/v1/runner/register", { token: reg.body.tokens[1], json: { ...body, capabilities: { ...body.capabilities, labels: ["linux", "prod"] } } });
    assert.equal(greedy.status, 403);
  } finally {
    await s.close();
  }
});
