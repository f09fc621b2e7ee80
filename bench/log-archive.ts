/**
 * Cost of archiving a finished log (src/server/engine/log-archive.ts: read it from the state
 * store, put it as one blob, commit `log_blob` and drop the live copy), in process, on the real
 * stores. Baseline, interleaved in the same run: a plain `put` of as many (other) bytes into the
 * same blob store. Prints one JSON document with the median ms per MiB of each.
 * Usage: tsx bench/log-archive.ts [MiB=8] [logs=8] [--pg] [--s3]   (services from scripts/test-services.sh)
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Readable } from "node:stream";
import { systemClock } from "../src/base/clock.ts";
import { testS3Env } from "../src/config/server-config.ts";
import type { BlobStore } from "../src/server/blobs/blob-store.ts";
import { FsBlobStore } from "../src/server/blobs/cas.ts";
import { S3BlobStore } from "../src/server/blobs/s3-blob-store.ts";
import { PgStateStore } from "../src/server/db/pg/pg-state-store.ts";
import { SqliteStateStore } from "../src/server/db/sqlite-state-store.ts";
import { nullMetrics } from "../src/server/engine/context.ts";
import { archiveLog, type ArchiveContext } from "../src/server/engine/log-archive.ts";
import type { StateStore } from "../src/server/engine/state-store.ts";
import { resolveOptions } from "../src/server/options.ts";
import { newKey } from "../src/server/secrets/key-file.ts";
import { SecretBox } from "../src/server/secrets/secret-box.ts";
import { jobSpec } from "../test/server-harness.ts";
import { createTestDatabase, type TestDatabase } from "../test/support/pg-test-db.ts";

const args = process.argv.slice(2);
const pg = args.includes("--pg");
const s3 = args.includes("--s3");
const [logMiB = 8, logs = 8] = args.filter((a) => /^\d+$/.test(a)).map(Number);
const MiB = 1024 * 1024;
/** Appends as runners send them. */
const APPEND_BYTES = 256 * 1024;

const dir = await mkdtemp(join(tmpdir(), "deltaci-bench-archive-"));
let db: TestDatabase | null = null;
const box = new SecretBox([newKey()]);
let store: StateStore;
if (pg) {
  db = await createTestDatabase();
  store = await PgStateStore.open({ url: db.url, box });
} else {
  store = new SqliteStateStore(join(dir, "state.db"), "full", box);
}
let blobs: BlobStore;
if (s3) {
  const env = testS3Env();
  blobs = new S3BlobStore({
    bucket: env.bucket, prefix: `bench-archive-${randomBytes(6).toString("hex")}/`, endpoint: env.endpoint, region: env.region, forcePathStyle: true,
    credentials: env.credentials, partSizeBytes: 16 * MiB, multipartThresholdBytes: 64 * MiB, presignExpiryMs: 600_000,
  });
} else {
  blobs = new FsBlobStore(dir);
}
await blobs.init();
const ctx: ArchiveContext = { store, clock: systemClock, opts: resolveOptions({ dataDir: dir, tailWindowMs: 0 }), metrics: nullMetrics, logger: undefined };

/** A job that ended a second ago with a log of `bytes` written in appends; returns its id. */
async function endedJob(i: number, bytes: Buffer): Promise<string> {
  const now = Date.now() - 1000;
  const id = `job_bench${i}_${randomBytes(3).toString("hex")}`;
  await store.write(async (tx) => {
    const seq = await tx.nextJobSeq();
    await tx.insertJob({
      id, runId: `run_${id}`, name: "bench", seq, spec: jobSpec(), secrets: {}, fork: false, state: "succeeded", reqKey: "k", attempt: 1, maxAttempts: 3,
      cancelMode: "none", cancelDeadline: null, logLimit: bytes.length, failure: null, steps: null, unschedulable: null, createdAt: now, finishedAt: now,
    });
    await tx.insertAttempt({
      jobId: id, attempt: 1, state: "succeeded", runnerId: null, leaseId: null, leaseHash: null, expiresAt: null, startedAt: now,
      finishedAt: now, reason: null, endedBy: "complete", logBytes: 0, logTruncated: false, logBlob: null,
    });
  });
  for (let at = 0; at < bytes.length; at += APPEND_BYTES) {
    const piece = bytes.subarray(at, at + APPEND_BYTES);
    await store.write(async (tx) => {
      await tx.getAttempt(id, 1);
      await tx.appendLogChunk(id, 1, at, [piece]);
      await tx.updateAttempt(id, 1, { logBytes: at + piece.length });
    });
  }
  return id;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const round = (x: number) => Math.round(x * 100) / 100;

const stored: string[] = [];
try {
  const load0 = loadavg();
  const putMsPerMiB: number[] = [];
  const archiveMsPerMiB: number[] = [];
  for (let i = 0; i < logs; i++) {
    // Distinct bytes each time: a put of bytes the store holds would only deduplicate.
    const plain = randomBytes(logMiB * MiB);
    let t0 = performance.now();
    stored.push((await blobs.put(Readable.from([plain]), plain.length)).sha256);
    putMsPerMiB.push((performance.now() - t0) / logMiB);

    const log = randomBytes(logMiB * MiB);
    const jobId = await endedJob(i, log);
    t0 = performance.now();
    if ((await archiveLog(ctx, blobs, jobId, 1)) !== "archived") throw new Error(`log ${jobId} was not archived`);
    archiveMsPerMiB.push((performance.now() - t0) / logMiB);
    const a = await store.getAttempt(jobId, 1);
    if (a?.logBlob) stored.push(a.logBlob);
  }
  const put = median(putMsPerMiB);
  const archive = median(archiveMsPerMiB);
  console.log(JSON.stringify({
    bench: "log-archive", store: pg ? "postgres" : "sqlite", blobStore: s3 ? "s3" : "fs", logMiB, logs, appendBytes: APPEND_BYTES,
    baseline: { what: "plain blob put of as many bytes, same store, same run", msPerMiB: round(put), samples: putMsPerMiB.map(round) },
    archive: { msPerMiB: round(archive), samples: archiveMsPerMiB.map(round) },
    ratioArchiveToPut: round(archive / put),
    loadavg: { before: load0.map(round), after: loadavg().map(round) },
    cpus: cpus().length,
  }, null, 2));
} finally {
  if (s3) for (const sha of stored) await blobs.deleteBlob(sha);
  await blobs.close();
  await store.close();
  await rm(dir, { recursive: true, force: true });
  await db?.drop();
}
