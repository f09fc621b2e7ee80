/**
 * The StateStore conformance suite: every store (SQLite, PostgreSQL) passes the same cases.
 * `open()` gives two handles on one fresh state: on SQLite the same store twice (one process),
 * on PostgreSQL two pools (two replicas), so the race cases contend for real row locks.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { StateOps, StateStore, StateTx } from "../../src/server/engine/state-store.ts";
import type { AttemptRow, JobRow } from "../../src/server/engine/types.ts";
import type { SecretBox } from "../../src/server/secrets/secret-box.ts";
import { jobSpec } from "../server-harness.ts";

export interface StoreFixture {
  a: StateStore;
  b: StateStore;
  close(): Promise<void>;
}

export interface StoreFactory {
  name: string;
  open(box: SecretBox): Promise<StoreFixture>;
}

function job(id: string, seq: number, over: Partial<JobRow> = {}): JobRow {
  return {
    id, runId: `run_${id}`, name: `name-${id}`, seq, spec: jobSpec({ name: `name-${id}`, runsOn: { labels: ["linux", `l${seq % 2}`] } }),
    secrets: {}, fork: false, state: "queued", reqKey: "k1", attempt: 1, maxAttempts: 3, cancelMode: "none", cancelDeadline: null,
    logLimit: 1 << 20, failure: null, steps: null, unschedulable: null, createdAt: 1000 + seq, finishedAt: null, ...over,
  };
}

function attempt(jobId: string, over: Partial<AttemptRow> = {}): AttemptRow {
  return {
    jobId, attempt: 1, state: "queued", runnerId: null, leaseId: null, leaseHash: null, expiresAt: null, startedAt: null,
    finishedAt: null, reason: null, endedBy: null, logBytes: 0, logTruncated: false, logBlob: null, ...over,
  };
}

/** Inserts a job (and its attempt 1) in one write; returns the job as stored. */
async function addJob(s: StateStore, over: Partial<JobRow> = {}, a: Partial<AttemptRow> = {}): Promise<JobRow> {
  return s.write(async (tx) => {
    const seq = await tx.nextJobSeq();
    const j = job(over.id ?? `job_${seq}_${Math.random().toString(36).slice(2, 8)}`, seq, over);
    await tx.insertJob(j);
    await tx.insertAttempt(attempt(j.id, a));
    return j;
  });
}

export function stateStoreConformance(f: StoreFactory, box: () => SecretBox): void {
  const withStores = (name: string, fn: (fx: StoreFixture) => Promise<void>) =>
    test(`${f.name}: ${name}`, async () => {
      const fx = await f.open(box());
      try {
        await fn(fx);
      } finally {
        await fx.close();
      }
    });

  void withStores("a write whose statement the driver refuses (never sent) commits nothing of its transaction", async ({ a, b }) => {
    // postgres.js rejects an undefined parameter on the client: nothing aborts on the server, so a
    // COMMIT sent behind it would commit the transaction's other writes.
    await assert.rejects(a.write(async (tx) => {
      await tx.setKv("conformance-first", "1");
      await tx.setKv("conformance-second", undefined as unknown as string);
    }));
    assert.equal(await b.getKv("conformance-first"), undefined, "the first write was rolled back with the second");
  });

  void withStores("jobs round-trip, secrets included; list filters and pages by seq", async ({ a, b }) => {
    const j1 = await addJob(a, { secrets: { TOKEN: "s3cret" }, fork: true });
    const j2 = await addJob(a, { name: "other" });
    assert.ok(j2.seq > j1.seq);
    const got = await b.getJob(j1.id);
    assert.ok(got);
    assert.deepEqual(got.secrets, { TOKEN: "s3cret" });
    assert.equal(got.fork, true);
    assert.deepEqual(got.spec, j1.spec);
    await a.write((tx) => tx.updateJob(j1.id, { state: "failed", failure: { reason: "step_failed", step: 0, message: "x" }, secrets: {}, finishedAt: 5 }));
    const upd = await b.getJob(j1.id);
    assert.equal(upd?.state, "failed");
    assert.deepEqual(upd?.failure, { reason: "step_failed", step: 0, message: "x" });
    assert.deepEqual(upd?.secrets, {});
    assert.deepEqual((await b.listJobs({ limit: 10 })).map((j) => j.id), [j2.id, j1.id]);
    assert.deepEqual((await b.listJobs({ limit: 10, state: "failed" })).map((j) => j.id), [j1.id]);
    assert.deepEqual((await b.listJobs({ limit: 10, name: "other" })).map((j) => j.id), [j2.id]);
    assert.deepEqual((await b.listJobs({ limit: 10, label: `l${j1.seq % 2}` })).map((j) => j.id), [j1.id]);
    assert.deepEqual((await b.listJobs({ limit: 10, beforeSeq: j2.seq })).map((j) => j.id), [j1.id]);
    assert.deepEqual(Object.fromEntries((await b.countJobsByState()).map((c) => [c.state, c.count])), { failed: 1, queued: 1 });
  });

  void withStores("the oldest queued job among the given requirement sets", async ({ a, b }) => {
    const old = await addJob(a, { reqKey: "k2" });
    const mid = await addJob(a, { reqKey: "k1" });
    await addJob(a, { reqKey: "k3" });
    assert.deepEqual((await b.queuedReqKeys()).sort().filter((k) => ["k1", "k2", "k3"].includes(k)), ["k1", "k2", "k3"]);
    assert.equal((await b.oldestQueued(["k1", "k3"]))?.id, mid.id);
    assert.equal((await b.oldestQueued(["k2", "k1"]))?.id, old.id);
    assert.equal(await b.oldestQueued(["nope"]), undefined);
    const rows = await b.demandRows();
    assert.deepEqual(rows.filter((r) => r.reqKey === "k2"), [{ reqKey: "k2", state: "queued", unschedulable: false, count: 1 }]);
  });

  void withStores("attempts, leases, expiry and the restart extension", async ({ a, b }) => {
    const j = await addJob(a);
    await a.write((tx) => tx.updateAttempt(j.id, 1, { state: "running", leaseHash: "h1", leaseId: "l1", runnerId: "r1", expiresAt: 100, startedAt: 10 }));
    assert.equal((await b.getAttemptByLeaseHash("h1"))?.jobId, j.id);
    // The attempt and its job in one read, as the two reads give them (outside and inside a transaction).
    const both = async (s: StateOps) => ({ a: await s.getAttemptByLeaseHash("h1"), job: await s.getJob(j.id) });
    assert.deepEqual(await b.getLeasedAttempt("h1"), await both(b));
    assert.deepEqual(await b.write(async (tx) => [await tx.getLeasedAttempt("h1"), await tx.getLeasedAttempt("nope")]), [await both(b), undefined]);
    assert.deepEqual((await b.getLeasedAttempt("h1"))?.job?.spec, j.spec);
    assert.equal(await b.getLeasedAttempt("nope"), undefined);
    assert.equal((await b.getAttempt(j.id, 1))?.expiresAt, 100);
    assert.deepEqual((await b.expiredAttempts(99)).filter((x) => x.jobId === j.id), []);
    assert.deepEqual((await b.expiredAttempts(100)).map((x) => x.jobId), [j.id]);
    assert.equal(await b.write((tx) => tx.extendLiveLeases(500)), 1);
    assert.equal((await a.getAttempt(j.id, 1))?.expiresAt, 500);
    await a.write(async (tx) => {
      await tx.updateAttempt(j.id, 1, { state: "lost", endedBy: "lost", finishedAt: 600 });
      await tx.insertAttempt(attempt(j.id, { attempt: 2 }));
      await tx.addTransition(j.id, { at: 1, attempt: 1, from: "attempt:running", to: "attempt:lost", reason: "r" });
      await tx.addTransition(j.id, { at: 2, attempt: 2, from: "attempt:none", to: "attempt:queued", reason: "q" });
    });
    assert.deepEqual((await b.listAttempts(j.id)).map((x) => [x.attempt, x.state]), [[1, "lost"], [2, "queued"]]);
    assert.deepEqual((await b.listTransitions(j.id)).map((t) => t.to), ["attempt:lost", "attempt:queued"]);
    assert.equal(await b.write((tx) => tx.extendLiveLeases(1000)), 0);
  });

  void withStores("runners, registrations, artifacts and kv", async ({ a, b }) => {
    const caps = { os: "linux", arch: "x64", labels: ["linux"], toolchains: {}, resources: { cpus: 1, memoryMiB: 1, diskMiB: 1 }, isolation: ["oci"] } as const;
    await a.write(async (tx) => {
      await tx.insertRegistration({ hash: "reg1", labels: ["linux"], expiresAt: 99, usedAt: null });
      await tx.insertRunner({ id: "rnr1", name: "n", version: "1", capabilities: { ...caps, labels: [...caps.labels], isolation: [...caps.isolation] }, sessionHash: "s1", sessionExpiresAt: 9, sessionUsed: false, createdAt: 1 });
      await tx.setKv("k", "v1");
      await tx.setKv("k", "v2");
    });
    assert.deepEqual(await b.getRegistration("reg1"), { hash: "reg1", labels: ["linux"], expiresAt: 99, usedAt: null });
    await b.write((tx) => tx.markRegistrationUsed("reg1", 7));
    assert.equal((await a.getRegistration("reg1"))?.usedAt, 7);
    assert.equal((await b.getRunnerBySession("s1"))?.id, "rnr1");
    await b.write((tx) => tx.markSessionUsed("rnr1"));
    assert.equal((await a.getRunner("rnr1"))?.sessionUsed, true);
    assert.equal(await b.getKv("k"), "v2");
    assert.equal(await b.getKv("missing"), undefined);
    const j = await addJob(a);
    const art = { id: "art1", jobId: j.id, attempt: 1, name: "out", size: 3, sha256: "ab", mediaType: "text/plain", path: "o/out.txt", state: "pending" as const, createdAt: 1 };
    await a.write((tx) => tx.insertArtifact(art));
    assert.deepEqual(await b.findArtifact(j.id, 1, "out"), art);
    await b.write((tx) => tx.setArtifactCommitted("art1"));
    assert.equal((await a.getArtifact("art1"))?.state, "committed");
    assert.deepEqual((await a.listArtifacts(j.id, 1)).map((x) => x.id), ["art1"]);
    await a.write((tx) => tx.deleteArtifact("art1"));
    assert.equal(await b.getArtifact("art1"), undefined);
  });

  void withStores("log chunks: appended at the committed end, read back from any offset", async ({ a, b }) => {
    const j = await addJob(a);
    const append = (s: StateStore, start: number, parts: string[]) =>
      s.write(async (tx) => {
        await tx.appendLogChunk(j.id, 1, start, parts.map((p) => Buffer.from(p)));
        await tx.updateAttempt(j.id, 1, { logBytes: start + parts.join("").length });
      });
    await append(a, 0, ["hel", "lo "]);
    await append(b, 6, ["world"]);
    const read = async (s: StateStore, offset: number) => {
      let out = "";
      let at = offset;
      for (;;) {
        const chunks = await s.readLogChunks(j.id, 1, at, 16);
        if (chunks.length === 0) return out;
        for (const c of chunks) {
          out += c.data.subarray(Math.max(0, at - c.start)).toString();
          at = c.start + c.data.length;
        }
      }
    };
    assert.equal(await read(b, 0), "hello world");
    assert.equal(await read(a, 4), "o world");
    assert.equal(await read(a, 11), "");
  });

  void withStores("a failed write rolls back alone and runs its rollback hooks; commit hooks run after the commit", async ({ a }) => {
    const events: string[] = [];
    const failing = a.write(async (tx) => {
      await tx.setKv("rolled", "back");
      tx.onRollback(() => events.push("undo"));
      tx.afterCommit(() => events.push("never"));
      throw new Error("no");
    });
    const ok = a.write(async (tx) => {
      await tx.setKv("kept", "yes");
      tx.afterCommit(() => events.push("after"));
      return 42;
    });
    await assert.rejects(failing, /no/);
    assert.equal(await ok, 42);
    assert.deepEqual(events.sort(), ["after", "undo"]);
    assert.equal(await a.getKv("rolled"), undefined);
    assert.equal(await a.getKv("kept"), "yes");
  });

  void withStores("stored secrets are re-sealed or, for terminal jobs, deleted", async ({ a }) => {
    const live = await addJob(a, { secrets: { A: "1" } });
    const done = await addJob(a, { secrets: { B: "2" } });
    await a.write((tx) => tx.updateJob(done.id, { state: "succeeded" }));
    const counts = await a.sealStoredSecrets(new Set(["succeeded"]));
    assert.equal(counts.deleted, 1);
    assert.deepEqual((await a.getJob(live.id))?.secrets, { A: "1" });
    assert.deepEqual((await a.getJob(done.id))?.secrets, {});
    assert.ok((await a.schemaVersion()) >= 1);
  });

  raceCases(withStores);
}

type WithStores = (name: string, fn: (fx: StoreFixture) => Promise<void>) => Promise<void>;

/** Read-check-update paths under contention: each must let exactly one writer through. */
function raceCases(withStores: WithStores): void {
  void withStores("queue heads: concurrent claims over two handles never get the same job", async ({ a, b }) => {
    for (let i = 0; i < 6; i++) await addJob(a, { reqKey: "race" });
    const claim = (s: StateStore) =>
      s.write(async (tx) => {
        const j = await tx.oldestQueued(["race"]);
        if (!j) return null;
        await tx.updateJob(j.id, { state: "leased" });
        return j.id;
      });
    const got = await Promise.all(Array.from({ length: 12 }, (_, i) => claim(i % 2 === 0 ? a : b)));
    const ids = got.filter((x): x is string => x !== null);
    assert.equal(ids.length, 6, `claims: ${JSON.stringify(got)}`);
    assert.equal(new Set(ids).size, 6, "no job was claimed twice");
  });

  void withStores("a registration token is used once across handles", async ({ a, b }) => {
    await a.write((tx) => tx.insertRegistration({ hash: "once", labels: [], expiresAt: Number.MAX_SAFE_INTEGER, usedAt: null }));
    const use = (s: StateStore, n: number) =>
      s.write(async (tx) => {
        const r = await tx.getRegistration("once");
        if (!r || r.usedAt !== null) return false;
        await tx.markRegistrationUsed("once", n);
        return true;
      });
    const wins = await Promise.all(Array.from({ length: 10 }, (_, i) => use(i % 2 === 0 ? a : b, i + 1)));
    assert.equal(wins.filter(Boolean).length, 1);
  });

  void withStores("log appends at one offset: exactly one lands, the rest see the new end", async ({ a, b }) => {
    const j = await addJob(a, {}, { state: "running", leaseHash: "lh", expiresAt: Number.MAX_SAFE_INTEGER });
    const append = (s: StateStore, text: string) =>
      s.write(async (tx) => {
        const at = await tx.getAttemptByLeaseHash("lh");
        if (!at || at.logBytes !== 0) return false;
        await tx.appendLogChunk(j.id, 1, 0, [Buffer.from(text)]);
        await tx.updateAttempt(j.id, 1, { logBytes: text.length });
        return true;
      });
    const wins = await Promise.all(Array.from({ length: 8 }, (_, i) => append(i % 2 === 0 ? a : b, `writer-${i}`)));
    assert.equal(wins.filter(Boolean).length, 1);
    const chunks = await b.readLogChunks(j.id, 1, 0, 16);
    assert.equal(chunks.length, 1);
    assert.equal(chunks[0]?.data.toString(), `writer-${wins.indexOf(true)}`);
  });

  void withStores("complete vs expiry: the attempt ends once, by one of them", async ({ a, b }) => {
    const jobs = await Promise.all(Array.from({ length: 6 }, (_, i) => addJob(a, {}, { state: "running", leaseHash: `lh${i}`, expiresAt: 50 })));
    const complete = (s: StateStore, i: number) =>
      s.write(async (tx: StateTx) => {
        const at = await tx.getAttemptByLeaseHash(`lh${i}`);
        if (!at || at.state !== "running") return;
        await tx.updateAttempt(at.jobId, 1, { state: "succeeded", endedBy: "complete" });
        await tx.addTransition(at.jobId, { at: 1, attempt: 1, from: "attempt:running", to: "attempt:succeeded", reason: "c" });
      });
    const sweep = (s: StateStore) =>
      s.write(async (tx: StateTx) => {
        for (const at of await tx.expiredAttempts(100)) {
          await tx.getJob(at.jobId);
          await tx.updateAttempt(at.jobId, 1, { state: "lost", endedBy: "lost" });
          await tx.addTransition(at.jobId, { at: 1, attempt: 1, from: "attempt:running", to: "attempt:lost", reason: "s" });
        }
      });
    await Promise.all([...jobs.map((_, i) => complete(i % 2 === 0 ? a : b, i)), sweep(b), sweep(a)]);
    for (const j of jobs) {
      const ends = (await a.listTransitions(j.id)).filter((t) => t.from === "attempt:running");
      assert.equal(ends.length, 1, `${j.id}: ${JSON.stringify(ends)}`);
      assert.equal((await a.getAttempt(j.id, 1))?.state, ends[0]?.to.slice("attempt:".length));
    }
  });
}
