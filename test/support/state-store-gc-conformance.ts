/**
 * The retention and GC part of the StateStore conformance suite (engine/collector.ts relies on
 * it): what is marked, what is deleted, what is kept, and (with `race`, on a store with
 * concurrent writers) that marking waits for a writer that checked the blob gate.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import type { StateStore } from "../../src/server/engine/state-store.ts";
import type { ArtifactRow, JobRow } from "../../src/server/engine/types.ts";
import type { SecretBox } from "../../src/server/secrets/secret-box.ts";
import { capabilities, jobSpec } from "../server-harness.ts";
import type { StoreFactory, StoreFixture } from "./state-store-conformance.ts";

const hex = () => randomBytes(32).toString("hex");

export async function addJob(s: StateStore, over: Partial<JobRow>, attemptState = "succeeded", runnerId: string | null = null): Promise<JobRow> {
  return s.write(async (tx) => {
    const seq = await tx.nextJobSeq();
    const id = `job_gc${seq}_${randomBytes(3).toString("hex")}`;
    const j: JobRow = {
      id, runId: `run_${id}`, name: id, seq, spec: jobSpec(), secrets: {}, fork: false, state: "succeeded", reqKey: "k", attempt: 1, maxAttempts: 3,
      cancelMode: "none", cancelDeadline: null, logLimit: 1 << 20, failure: null, steps: null, unschedulable: null, createdAt: 1, finishedAt: null, ...over,
    };
    await tx.insertJob(j);
    await tx.insertAttempt({
      jobId: id, attempt: 1, state: attemptState as "succeeded", runnerId, leaseId: null, leaseHash: null, expiresAt: null, startedAt: null,
      finishedAt: j.finishedAt, reason: null, endedBy: null, logBytes: 0, logTruncated: false, logBlob: null,
    });
    await tx.addTransition(id, { at: 1, attempt: 1, from: "queued", to: j.state, reason: "test" });
    return j;
  });
}

function artifact(jobId: string, sha256: string): ArtifactRow {
  return { id: `art_${randomBytes(6).toString("hex")}`, jobId, attempt: 1, name: `a-${sha256.slice(0, 6)}`, size: 10, sha256, mediaType: "x", path: null, state: "pending", createdAt: 1 };
}

export function stateStoreGcConformance(f: StoreFactory, box: () => SecretBox, opts: { race?: (fx: StoreFixture) => Promise<void> } = {}): void {
  const withStores = (name: string, fn: (fx: StoreFixture) => Promise<void>) =>
    test(`${f.name}: ${name}`, async () => {
      const fx = await f.open(box());
      try {
        await fn(fx);
      } finally {
        await fx.close();
      }
    });

  void withStores("gc: only blobs no artifact and no job source references are marked; writers see marks; the epoch moves", async ({ a, b }) => {
    const [src, art, free] = [hex(), hex(), hex()];
    const j = await addJob(a, { spec: jobSpec({ source: { kind: "archive", sha256: src } }), state: "running", finishedAt: null }, "running");
    await a.write((tx) => tx.insertArtifact(artifact(j.id, art)));
    const e0 = await b.gcEpoch();
    const marked = await a.write((tx) => tx.markUnreferencedBlobs([src, art, free].map((sha256) => ({ sha256, size: 7 })), 5));
    assert.deepEqual(marked, [{ sha256: free, size: 7 }]);
    assert.deepEqual(await b.blobMarks(), [{ sha256: free, size: 7 }]);
    assert.equal(await b.write((tx) => tx.blobCollecting(free)), true);
    assert.equal(await b.write((tx) => tx.blobCollecting(art)), false);
    const e1 = await b.gcEpoch();
    assert.notEqual(e1, e0);
    assert.deepEqual(await a.write((tx) => tx.markUnreferencedBlobs([{ sha256: src, size: 1 }], 6)), [], "nothing marked: the epoch stays");
    assert.equal(await b.gcEpoch(), e1);
    await a.write((tx) => tx.clearBlobMarks([free]));
    assert.equal(await b.write((tx) => tx.blobCollecting(free)), false);
    assert.deepEqual(await b.blobMarks(), []);
    assert.notEqual(await b.gcEpoch(), e1);
  });

  void withStores("gc: expired terminal jobs are deleted with attempts, transitions, artifacts and logs; recent and live ones stay", async ({ a, b }) => {
    const old = await addJob(a, { state: "failed", finishedAt: 100 });
    const recent = await addJob(a, { state: "succeeded", finishedAt: 10_000 });
    const live = await addJob(a, { state: "running", finishedAt: null }, "running");
    await a.write(async (tx) => {
      await tx.insertArtifact(artifact(old.id, hex()));
      await tx.appendLogChunk(old.id, 1, 0, [Buffer.from("old log")]);
      await tx.updateAttempt(old.id, 1, { logBytes: 7 });
    });
    assert.deepEqual(await b.expiredJobIds(5_000, 10), [old.id]);
    const r = await b.write((tx) => tx.deleteJobs([old.id, recent.id, live.id], 5_000));
    assert.deepEqual(r, { jobs: 1, logBytes: 7 });
    assert.equal(await a.getJob(old.id), undefined);
    assert.deepEqual(await a.listAttempts(old.id), []);
    assert.deepEqual(await a.listTransitions(old.id), []);
    assert.deepEqual(await a.listArtifacts(old.id, 1), []);
    assert.deepEqual(await a.readLogChunks(old.id, 1, 0, 10), []);
    assert.ok(await a.getJob(recent.id));
    assert.ok(await a.getJob(live.id));
  });

  void withStores("gc: expired registrations and runners with an expired session and no live attempt are deleted", async ({ a, b }) => {
    await a.write(async (tx) => {
      await tx.insertRegistration({ hash: "reg-old", labels: [], expiresAt: 100, usedAt: null });
      await tx.insertRegistration({ hash: "reg-new", labels: [], expiresAt: 10_000, usedAt: null });
      const runner = (id: string, sessionExpiresAt: number) => ({
        id, name: id, version: "1", capabilities: capabilities(), sessionHash: `h-${id}`, sessionExpiresAt, sessionUsed: true, createdAt: 1,
      });
      await tx.insertRunner(runner("run-dead", 100));
      await tx.insertRunner(runner("run-busy", 100));
      await tx.insertRunner(runner("run-fresh", 10_000));
    });
    await addJob(a, { state: "running", finishedAt: null }, "running", "run-busy");
    assert.equal(await b.write((tx) => tx.deleteExpiredRegistrations(5_000)), 1);
    assert.equal(await b.write((tx) => tx.deleteDeadRunners(5_000)), 1);
    assert.equal(await a.getRegistration("reg-old"), undefined);
    assert.ok(await a.getRegistration("reg-new"));
    assert.equal(await a.getRunner("run-dead"), undefined);
    assert.ok(await a.getRunner("run-busy"));
    assert.ok(await a.getRunner("run-fresh"));
  });

  if (opts.race) void withStores("gc: marking waits for a writer that checked the blob gate, and sees its reference", opts.race);
}

/** The race on a store with concurrent writers: `waiting()` resolves once a transaction waits for the gate. */
export async function markWaitsForWriter({ a, b }: StoreFixture, waiting: () => Promise<void>): Promise<void> {
  const sha = hex();
  const j = await addJob(a, { state: "running", finishedAt: null }, "running");
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let checked!: () => void;
  const wasChecked = new Promise<void>((r) => (checked = r));
  const writer = a.write(async (tx) => {
    assert.equal(await tx.blobCollecting(sha), false);
    checked();
    await gate;
    await tx.insertArtifact(artifact(j.id, sha));
  });
  await wasChecked;
  const marking = b.write((tx) => tx.markUnreferencedBlobs([{ sha256: sha, size: 10 }], 1));
  // Without a gate the marking does not wait: it ends first, and marks the blob the writer is about to reference.
  await Promise.race([waiting(), marking.then(() => undefined, () => undefined)]);
  release();
  await writer;
  assert.deepEqual(await marking, [], "the reference committed while marking waited is seen");
}
