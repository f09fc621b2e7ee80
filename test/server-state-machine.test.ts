/** The attempt state machine of PROTOCOL.md against a real server on loopback. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { timerClock, type Clock } from "../src/base/clock.ts";
import { startTestServer, type TestServer } from "./server-harness.ts";

async function withServer(fn: (s: TestServer) => Promise<void>, over = {}): Promise<void> {
  const s = await startTestServer(over);
  try {
    await fn(s);
  } finally {
    await s.close();
  }
}

void test("expired leases are retried, then the job ends errored (runner_lost)", () =>
  withServer(async (s) => {
    const jobId = await s.submit();
    for (let attempt = 1; attempt <= 3; attempt++) {
      const lease = await s.lease(await s.runner(), 30_000);
      assert.ok(lease, `attempt ${attempt} leased`);
      assert.equal(lease.attempt, attempt);
      // no heartbeat: the sweeper expires it after the 1 s ttl
      await s.waitFor(jobId, (st) => st.attempts.find((a: { attempt: number }) => a.attempt === attempt)?.state === "lost");
    }
    const st = await s.waitFor(jobId, (x) => x.state === "errored");
    assert.equal(st.failure.reason, "runner_lost");
    assert.deepEqual(st.attempts.map((a: { state: string }) => a.state), ["lost", "lost", "lost"]);
    const jobMoves = st.transitions.filter((t: { from: string }) => !t.from.startsWith("attempt:")).map((t: { to: string }) => t.to);
    assert.deepEqual(jobMoves, ["queued", "leased", "queued", "leased", "queued", "leased", "errored"]);
    for (const t of st.transitions) {
      assert.ok(!Number.isNaN(Date.parse(t.at)), "every transition has a time");
      assert.ok(t.reason.length > 0, "every transition has a reason");
    }
  }, { maxAttempts: 3, leaseTtlMs: 1000 }));

void test("succeeded, failed (never retried) and running states", () =>
  withServer(async (s) => {
    const ok = await s.submit();
    let l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    assert.equal((await s.status(ok)).state, "leased");
    assert.equal((await s.heartbeat(l.leaseToken, { state: "preparing" })).status, 200);
    assert.equal((await s.status(ok)).state, "leased");
    assert.equal((await s.heartbeat(l.leaseToken, { state: "running" })).status, 200);
    assert.equal((await s.status(ok)).state, "running");
    const steps = [{ name: "s", exitCode: 0, signal: null, startedAt: new Date().toISOString(), finishedAt: new Date().toISOString() }];
    assert.equal((await s.complete(l.leaseToken, { steps })).status, 200);
    const st = await s.status(ok);
    assert.equal(st.state, "succeeded");
    assert.deepEqual(st.steps, steps);
    assert.ok(st.finishedAt);

    const bad = await s.submit();
    l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    const failure = { reason: "step_failed", step: 0, message: "exit 1" };
    assert.equal((await s.complete(l.leaseToken, { result: "failed", exitCode: 1, failure })).status, 200);
    const fst = await s.status(bad);
    assert.equal(fst.state, "failed");
    assert.deepEqual(fst.failure, failure);
    assert.equal(fst.attempts.length, 1, "step failures are never retried");
  }));

void test("runner_error is retried; other errors end the job errored", () =>
  withServer(async (s) => {
    const jobId = await s.submit();
    let l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    const rerr = { reason: "runner_error", step: null, message: "boom" };
    assert.equal((await s.complete(l.leaseToken, { result: "error", exitCode: null, failure: rerr })).status, 200);
    let st = await s.status(jobId);
    assert.equal(st.state, "queued");
    assert.equal(st.attempts.length, 2);
    l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    assert.equal(l.attempt, 2);
    const serr = { reason: "sandbox_error", step: null, message: "crun failed" };
    assert.equal((await s.complete(l.leaseToken, { result: "error", exitCode: null, failure: serr })).status, 200);
    st = await s.status(jobId);
    assert.equal(st.state, "errored");
    assert.equal(st.failure.reason, "sandbox_error");
  }));

void test("runner_error on the last attempt ends errored", () =>
  withServer(async (s) => {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    await s.complete(l.leaseToken, { result: "error", exitCode: null, failure: { reason: "runner_error", step: null, message: "x" } });
    const st = await s.status(jobId);
    assert.equal(st.state, "errored");
    assert.equal(st.failure.reason, "runner_error");
  }, { maxAttempts: 1 }));

void test("complete is idempotent, checks the log, and a second complete cannot change the verdict", () =>
  withServer(async (s) => {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    assert.equal((await s.log(l.leaseToken, 0, "abc")).status, 202);
    const short = await s.complete(l.leaseToken);
    assert.equal(short.status, 412);
    assert.equal(short.body.error.code, "E_LOG_INCOMPLETE");
    assert.equal(short.body.committed, 3);
    const body = { log: { bytes: 3, sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" } };
    assert.equal((await s.complete(l.leaseToken, body)).status, 200);
    assert.equal((await s.complete(l.leaseToken, body)).status, 200);
    assert.equal((await s.complete(l.leaseToken, { ...body, result: "failed", failure: { reason: "step_failed", step: 0, message: "" } })).status, 200);
    assert.equal((await s.status(jobId)).state, "succeeded");
    assert.equal((await s.heartbeat(l.leaseToken)).status, 409, "a terminal attempt's token cannot heartbeat");
  }));

void test("cancel: queued at once; running via long-polled heartbeat and cancel-ack", () =>
  withServer(async (s) => {
    const queued = await s.submit();
    const c0 = await s.api("POST", `/v1/jobs/${queued}/cancel`, {});
    assert.equal(c0.status, 200);
    assert.equal(c0.body.state, "canceled");
    assert.equal((await s.status(queued)).state, "canceled");

    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    assert.equal(l.jobId, jobId);
    const held = s.heartbeat(l.leaseToken, { waitMs: 60_000 });
    const c1 = await s.call("POST", `/v1/jobs/${jobId}/cancel`, { token: s.srv.apiToken });
    assert.equal(c1.status, 200, JSON.stringify(c1.body));
    assert.equal(c1.body.state, "canceling");
    const hb = await held;
    assert.equal(hb.status, 200);
    assert.equal(hb.body.cancel, "graceful");
    const esc = await s.api("POST", `/v1/jobs/${jobId}/cancel`, { mode: "hard" });
    assert.equal(esc.body.state, "canceling");
    assert.equal((await s.heartbeat(l.leaseToken)).body.cancel, "hard");
    const ack = await s.complete(l.leaseToken, { result: "failed", exitCode: 143 }, "/v1/runner/cancel-ack");
    assert.equal(ack.status, 200, JSON.stringify(ack.body));
    const st = await s.status(jobId);
    assert.equal(st.state, "canceled");
    assert.equal(st.attempts[0].state, "canceled");
    assert.equal((await s.api("POST", `/v1/jobs/${jobId}/cancel`, {})).body.state, "canceled", "cancel of a finished job is harmless");
  }, { leaseTtlMs: 60_000, heartbeatIntervalMs: 30_000 }));

void test("a held heartbeat is answered when its attempt ends: a runner lets it come back after its report", { timeout: 30_000 }, async () => {
  // The server's clock, watched: a heartbeat is held once the server sleeps its hold (60 s here).
  const base = timerClock();
  let holds = 0;
  let onHold = () => {};
  const clock: Clock = {
    now: () => base.now(),
    sleep: (ms, signal) => {
      if (ms === 60_000) {
        holds++;
        onHold();
      }
      return base.sleep(ms, signal);
    },
  };
  const twoHeld = new Promise<void>((resolve) => {
    onHold = () => {
      if (holds >= 2) resolve();
    };
  });
  await withServer(async (s) => {
    await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    // Held for up to 60 s: only the attempt's end can answer them within the test's timeout.
    const held = s.heartbeat(l.leaseToken, { waitMs: 60_000 });
    const preparing = s.heartbeat(l.leaseToken, { state: "preparing", waitMs: 60_000 });
    await twoHeld; // both in their hold before the report (one that came after it would get a 409: the lease is stale)
    assert.equal((await s.complete(l.leaseToken)).status, 200);
    for (const hb of await Promise.all([held, preparing])) {
      assert.equal(hb.status, 200, JSON.stringify(hb.body));
      assert.equal(hb.body.cancel, "none");
    }
  }, { clock, leaseTtlMs: 10 * 60_000, heartbeatIntervalMs: 5 * 60_000 });
});

void test("cancel-ack without a cancel is a conflict", () =>
  withServer(async (s) => {
    await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    const r = await s.complete(l.leaseToken, {}, "/v1/runner/cancel-ack");
    assert.equal(r.status, 409);
    assert.equal(r.body.error.code, "E_CONFLICT");
  }));

void test("a silent cancel is hard-stopped after the deadline", () =>
  withServer(async (s) => {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    await s.api("POST", `/v1/jobs/${jobId}/cancel`);
    const st = await s.waitFor(jobId, (x) => x.state === "canceled");
    assert.equal(st.attempts[0].state, "canceled");
    assert.match(st.transitions.at(-1).reason, /hard-stop/);
    assert.equal((await s.heartbeat(l.leaseToken)).status, 409);
  }, { leaseTtlMs: 60_000, heartbeatIntervalMs: 10_000, hardStopMs: 300 }));

void test("secrets reach non-fork runners only and never leave through the job API", () =>
  withServer(async (s) => {
    const trusted = await s.submit({ name: "trusted" }, { secrets: { API_KEY: "value-1234" } });
    const fork = await s.submit({ name: "fork" }, { fork: true, secrets: { API_KEY: "value-1234" } });
    const l1 = await s.lease(await s.runner(), 1000);
    const l2 = await s.lease(await s.runner(), 1000);
    assert.ok(l1 && l2);
    const byJob = new Map([l1, l2].map((l) => [l.jobId, l]));
    assert.deepEqual(byJob.get(trusted)?.job.secrets, { API_KEY: "value-1234" });
    assert.deepEqual(byJob.get(fork)?.job.secrets, {});
    for (const path of [`/v1/jobs/${trusted}`, `/v1/jobs/${fork}`, "/v1/jobs", "/metrics"]) {
      const r = await s.api("GET", path);
      assert.equal(r.status, 200);
      assert.ok(!r.raw.toString().includes("value-1234"), `${path} leaks no secret`);
    }
  }));
