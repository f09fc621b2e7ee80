/**
 * The log-archive part of the StateStore conformance suite (engine/log-archive.ts relies on it):
 * which logs are due, what archiving drops and references, and that two archivers racing on one
 * state (on PostgreSQL two pools: two replicas) archive each log exactly once.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { test } from "node:test";
import { systemClock } from "../../src/base/clock.ts";
import { FsBlobStore } from "../../src/server/blobs/cas.ts";
import { nullMetrics } from "../../src/server/engine/context.ts";
import { archiveLogs, type ArchiveContext, type LogBlobs } from "../../src/server/engine/log-archive.ts";
import type { StateStore } from "../../src/server/engine/state-store.ts";
import { resolveOptions } from "../../src/server/options.ts";
import type { SecretBox } from "../../src/server/secrets/secret-box.ts";
import { addJob } from "./state-store-gc-conformance.ts";
import type { StoreFactory, StoreFixture } from "./state-store-conformance.ts";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** An ended job whose attempt 1 holds `log` (appended in pieces, as runners send it). */
async function endedWithLog(s: StateStore, finishedAt: number, log: Buffer): Promise<string> {
  const j = await addJob(s, { state: "succeeded", finishedAt });
  for (let at = 0; at < log.length; at += 4096) {
    const piece = log.subarray(at, at + 4096);
    await s.write(async (tx) => {
      await tx.getAttempt(j.id, 1);
      await tx.appendLogChunk(j.id, 1, at, [piece]);
      await tx.updateAttempt(j.id, 1, { logBytes: at + piece.length });
    });
  }
  return j.id;
}

async function readAll(s: StateStore, jobId: string): Promise<Buffer> {
  const out: Buffer[] = [];
  let at = 0;
  for (;;) {
    const chunks = await s.readLogChunks(jobId, 1, at, 64);
    if (chunks.length === 0) return Buffer.concat(out);
    for (const c of chunks) {
      out.push(c.data.subarray(at - c.start));
      at = c.start + c.data.length;
    }
  }
}

export function stateStoreArchiveConformance(f: StoreFactory, box: () => SecretBox): void {
  const withStores = (name: string, fn: (fx: StoreFixture, blobs: FsBlobStore) => Promise<void>) =>
    test(`${f.name}: ${name}`, async () => {
      const fx = await f.open(box());
      const dir = await mkdtemp(join(tmpdir(), "deltaci-archive-blobs-"));
      const blobs = new FsBlobStore(dir);
      await blobs.init();
      try {
        await fn(fx, blobs);
      } finally {
        await fx.close();
        await rm(dir, { recursive: true, force: true });
      }
    });
  const ctxOf = (store: StateStore): ArchiveContext => ({
    store, clock: systemClock, opts: resolveOptions({ dataDir: "/nonexistent", tailWindowMs: 1000 }), metrics: nullMetrics, logger: undefined,
  });

  void withStores("archive: due logs are ended ones past the window; archiving drops the live copy; its blob is referenced; deleteJobs counts live bytes only", async ({ a, b }, blobs) => {
    const log = randomBytes(10_000);
    const due = await endedWithLog(a, 100, log);
    const live = (await addJob(a, { state: "running", finishedAt: null }, "running")).id;
    const recent = await endedWithLog(a, 9_000, Buffer.from("recent"));
    assert.deepEqual(await b.unarchivedLogs(5_000, 10), [{ jobId: due, attempt: 1 }]);
    assert.ok((await b.unarchivedLogs(Date.now(), 10)).every((x) => x.jobId !== live), "a live attempt is never due");

    await blobs.put(Readable.from([log]), log.length);
    await b.write(async (tx) => {
      await tx.getAttempt(due, 1);
      await tx.setLogArchived(due, 1, sha(log));
    });
    assert.equal((await a.getAttempt(due, 1))?.logBlob, sha(log));
    assert.equal((await readAll(a, due)).length, 0, "the live copy is gone");
    assert.deepEqual(await b.unarchivedLogs(5_000, 10), [], "an archived log is not due again");
    assert.deepEqual(await a.write((tx) => tx.markUnreferencedBlobs([{ sha256: sha(log), size: log.length }], 1)), [], "an archived log's blob is referenced");

    const r = await b.write((tx) => tx.deleteJobs([due, recent], 20_000));
    assert.deepEqual(r, { jobs: 2, logBytes: "recent".length }, "the archived log's bytes are reclaimed as a blob, not as log bytes");
    assert.deepEqual(await a.write((tx) => tx.markUnreferencedBlobs([{ sha256: sha(log), size: log.length }], 1)), [{ sha256: sha(log), size: log.length }]);
  });

  void withStores("archive: a log whose blob is being collected, or whose blob marks moved during its put, is left for the next pass", async ({ a, b }, blobs) => {
    const log = randomBytes(20_000);
    const jobId = await endedWithLog(a, 100, log);
    const ref = { sha256: sha(log), size: log.length };
    // A collector pass marked the (so far unreferenced) blob: archiving must not reference it.
    assert.deepEqual(await b.write((tx) => tx.markUnreferencedBlobs([ref], 1)), [ref]);
    assert.deepEqual(await archiveLogs(ctxOf(a), blobs), { archived: 0, failed: 0 });
    assert.equal((await a.getAttempt(jobId, 1))?.logBlob, null);
    assert.ok((await readAll(b, jobId)).equals(log), "the live copy stays");
    await b.write((tx) => tx.clearBlobMarks([ref.sha256]));

    // A pass that marks, deletes and clears between the archiver's put and its commit: the put's blob may be gone.
    const racing: LogBlobs = {
      openRange: (s, from, to) => blobs.openRange(s, from, to),
      put: async (body, max) => {
        const put = await blobs.put(body, max);
        await b.write((tx) => tx.markUnreferencedBlobs([put], 2));
        await blobs.deleteBlob(put.sha256);
        await b.write((tx) => tx.clearBlobMarks([put.sha256]));
        return put;
      },
    };
    assert.deepEqual(await archiveLogs(ctxOf(a), racing), { archived: 0, failed: 0 });
    assert.equal((await a.getAttempt(jobId, 1))?.logBlob, null, "no attempt references a blob the collector deleted");
    assert.deepEqual(await archiveLogs(ctxOf(a), blobs), { archived: 1, failed: 0 }, "the next pass puts it again and archives it");
    assert.equal(await blobs.has(ref.sha256, ref.size), true);
  });

  void withStores("archive: two archivers racing over the same logs archive each exactly once, byte-exact", async ({ a, b }, blobs) => {
    const logs = new Map<string, Buffer>();
    for (let i = 0; i < 8; i++) {
      const log = i === 0 ? Buffer.alloc(0) : randomBytes(1000 + i * 3000);
      logs.set(await endedWithLog(a, 100 + i, log), log);
    }
    const [ra, rb] = await Promise.all([archiveLogs(ctxOf(a), blobs), archiveLogs(ctxOf(b), blobs)]);
    assert.equal(ra.failed + rb.failed, 0);
    assert.equal(ra.archived + rb.archived, logs.size, `archived ${ra.archived} + ${rb.archived}, once each`);
    for (const [jobId, log] of logs) {
      const at = await b.getAttempt(jobId, 1);
      assert.equal(at?.logBlob, sha(log));
      assert.equal((await readAll(a, jobId)).length, 0);
      if (log.length > 0) assert.equal(await blobs.has(sha(log), log.length), true);
    }
    const again = await archiveLogs(ctxOf(a), blobs);
    assert.deepEqual(again, { archived: 0, failed: 0 }, "nothing is archived twice");
  });
}
