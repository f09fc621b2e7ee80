/**
 * Two `deltaci server` replicas on one PostgreSQL database: a job submitted on one is leased by a
 * runner long-polling the other; a race over both has one winner; one sweeper at a time, taken
 * over when it dies; a replica's restart leaves the fleet's leases alone.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { connectPg } from "../src/server/db/pg/pg-state-store.ts";
import { ReplicaSet, until } from "./support/replicas.ts";

void test("a job submitted on A is leased by a runner long-polling B", async (t) => {
  const set = await ReplicaSet.create();
  try {
    const [a, b] = [await set.start("a"), await set.start("b")];
    for (let i = 0; i < 3; i++) {
      const session = await b.api.runner();
      const held = b.api.lease(session, 30_000);
      await until("B holds the long poll", async () => (await b.health()).leaseWaiters === 1);
      const t0 = performance.now();
      const jobId = await a.api.submit();
      const lease = await held;
      t.diagnostic(`submit on A → lease on B: ${(performance.now() - t0).toFixed(1)} ms`);
      assert.ok(lease, "the runner on B got a lease");
      assert.equal(lease.jobId, jobId);
      assert.equal((await a.api.status(jobId)).state, "leased");
    }
  } finally {
    await set.close();
  }
});

void test("24 runners spread over A and B race for one job: exactly one wins", async () => {
  const set = await ReplicaSet.create();
  try {
    const both = [await set.start("a"), await set.start("b")];
    const sessions = await Promise.all(Array.from({ length: 24 }, (_, i) => both[i % 2]!.api.runner()));
    const polls = sessions.map((s, i) => both[i % 2]!.api.lease(s, 4_000));
    await until("all 24 long polls held", async () => (await Promise.all(both.map((r) => r.health()))).reduce((n, h) => n + h.leaseWaiters, 0) === 24);
    const jobId = await both[0]!.api.submit();
    const leases = (await Promise.all(polls)).filter((l) => l !== null);
    assert.equal(leases.length, 1, "exactly one runner got the job");
    assert.equal(leases[0]?.jobId, jobId);
    const st = await both[1]!.api.status(jobId);
    assert.equal(st.attempts.length, 1);
    assert.equal(st.transitions.filter((x: { to: string }) => x.to === "attempt:leased").length, 1);
  } finally {
    await set.close();
  }
});

void test("one sweeper at a time; when it dies another replica takes over and sweeps", async () => {
  const set = await ReplicaSet.create(["--sweep-interval", "100ms", "--lease-ttl", "2s"]);
  try {
    const both = [await set.start("a"), await set.start("b")];
    const leaders = async () => (await Promise.all(both.map((r) => r.health().catch(() => ({ sweeper: false }))))).map((h) => h.sweeper);
    await until("one replica sweeps", async () => (await leaders()).filter(Boolean).length === 1);
    for (let i = 0; i < 10; i++) assert.equal((await leaders()).filter(Boolean).length, 1, "never two sweepers");
    const leader = both[(await leaders()).indexOf(true)]!;
    const other = both.find((r) => r !== leader)!;
    // A lease nobody heartbeats: only a live sweeper can end it.
    const jobId = await other.api.submit();
    assert.ok(await other.api.lease(await other.api.runner(), 1_000));
    await leader.kill9();
    await until("the survivor sweeps", async () => (await other.health()).sweeper);
    const st = await other.api.waitFor(jobId, (s) => s.attempts.some((x: { state: string }) => x.state === "lost"));
    assert.equal(st.attempts[0].state, "lost");
  } finally {
    await set.close();
  }
});

void test("a replica's restart does not extend the live leases of the fleet", async () => {
  const set = await ReplicaSet.create(["--sweep-interval", "100ms"]);
  const sql = connectPg(set.db.url, { max: 1 });
  try {
    const a = await set.start("a");
    let b = await set.start("b");
    await a.api.submit();
    assert.ok(await a.api.lease(await a.api.runner(), 1_000));
    const expiry = async () => Number((await sql`SELECT expires_at FROM attempts WHERE state = 'leased'`)[0]?.expires_at);
    const before = await expiry();
    await b.kill9();
    b = await set.start("b");
    await until("b serves", async () => (await b.health()).leaseWaiters === 0);
    assert.equal(await expiry(), before, "the restart left the lease's expiry alone");
  } finally {
    await sql.end({ timeout: 1 });
    await set.close();
  }
});
