/**
 * Cost of a retention / garbage-collection pass (src/server/engine/collector.ts) on the real
 * stores, in process: N terminal jobs, each with a 4 KiB log and a 1 KiB artifact blob of its own,
 * are inserted (the baseline: what writing them cost), then one pass that finds nothing to delete
 * (every job is recent: it still lists and checks every blob) and one pass, after the clock moved
 * past the retention, that deletes all N jobs, their logs and blobs. Prints one JSON document.
 * Usage: tsx bench/gc-pass.ts [jobs=2000] [--pg]   (--pg: PostgreSQL from scripts/test-services.sh)
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Readable } from "node:stream";
import { systemClock, type Clock } from "../src/base/clock.ts";
import { FsBlobStore } from "../src/server/blobs/cas.ts";
import { PgStateStore } from "../src/server/db/pg/pg-state-store.ts";
import { SqliteStateStore } from "../src/server/db/sqlite-state-store.ts";
import { collect } from "../src/server/engine/collector.ts";
import { nullMetrics, type EngineContext } from "../src/server/engine/context.ts";
import { KnownTokens } from "../src/server/engine/known-tokens.ts";
import { LeaseWaiters } from "../src/server/engine/lease-waiters.ts";
import { LogDigests } from "../src/server/engine/log-digests.ts";
import { Notifier } from "../src/server/engine/notifier.ts";
import type { StateStore } from "../src/server/engine/state-store.ts";
import type { JobRow } from "../src/server/engine/types.ts";
import { resolveOptions } from "../src/server/options.ts";
import { newKey } from "../src/server/secrets/key-file.ts";
import { SecretBox } from "../src/server/secrets/secret-box.ts";
import { createTestDatabase, type TestDatabase } from "../test/support/pg-test-db.ts";
import { jobSpec } from "../test/server-harness.ts";

const args = process.argv.slice(2);
const pg = args.includes("--pg");
const jobs = Number(args.find((a) => /^\d+$/.test(a)) ?? 2000);
const HOUR = 3_600_000;
const LOG = Buffer.alloc(4096, "log line\n");
const INSERT_CONCURRENCY = 50;

let offset = 0;
const clock: Clock = { now: () => Date.now() + offset, sleep: (ms, signal) => systemClock.sleep(ms, signal) };
const ms = (t0: number) => Math.round((performance.now() - t0) * 10) / 10;

const dir = await mkdtemp(join(tmpdir(), "deltaci-bench-gc-"));
let db: TestDatabase | null = null;
let store: StateStore;
const box = new SecretBox([newKey()]);
if (pg) {
  db = await createTestDatabase();
  store = await PgStateStore.open({ url: db.url, box });
} else {
  store = new SqliteStateStore(join(dir, "state.db"), "full", box);
}
const blobs = new FsBlobStore(dir);
await blobs.init();
const opts = resolveOptions({ dataDir: dir, clock, retentionMs: HOUR, gcGraceMs: 0 });
const ctx: EngineContext = {
  store, clock, opts, events: new Notifier(), waiters: new LeaseWaiters(), metrics: nullMetrics, logger: undefined,
  capacity: { pools: [] }, demand: { version: 0 }, uploadsInFlight: new Set(), discardUpload: () => {}, logDigests: new LogDigests(), knownTokens: new KnownTokens(),
  roles: { sweeper: true }, lifecycle: { stopping: false },
};

async function insertOne(i: number): Promise<void> {
  const blob = randomBytes(1024);
  const sha256 = createHash("sha256").update(blob).digest("hex");
  await blobs.put(Readable.from([blob]), blob.length);
  const now = clock.now();
  await store.write(async (tx) => {
    const seq = await tx.nextJobSeq();
    const id = `job_bench${i}_${randomBytes(3).toString("hex")}`;
    const j: JobRow = {
      id, runId: `run_${id}`, name: "bench", seq, spec: jobSpec(), secrets: {}, fork: false, state: "succeeded", reqKey: "k", attempt: 1, maxAttempts: 3,
      cancelMode: "none", cancelDeadline: null, logLimit: 1 << 20, failure: null, steps: null, unschedulable: null, createdAt: now, finishedAt: now,
    };
    await tx.insertJob(j);
    await tx.insertAttempt({
      jobId: id, attempt: 1, state: "succeeded", runnerId: null, leaseId: null, leaseHash: null, expiresAt: null, startedAt: now,
      finishedAt: now, reason: null, endedBy: "complete", logBytes: LOG.length, logTruncated: false, logBlob: null,
    });
    await tx.addTransition(id, { at: now, attempt: 1, from: "running", to: "succeeded", reason: "bench" });
    await tx.appendLogChunk(id, 1, 0, [LOG]);
    await tx.insertArtifact({ id: `art_${id}`, jobId: id, attempt: 1, name: "a.bin", size: blob.length, sha256, mediaType: "x", path: null, state: "committed", createdAt: now });
  });
}

try {
  const load0 = loadavg();
  let t0 = performance.now();
  for (let i = 0; i < jobs; i += INSERT_CONCURRENCY) {
    await Promise.all(Array.from({ length: Math.min(INSERT_CONCURRENCY, jobs - i) }, (_, k) => insertOne(i + k)));
  }
  const insertMs = ms(t0);

  t0 = performance.now();
  const noop = await collect(ctx, blobs);
  const noopMs = ms(t0);

  offset += 2 * HOUR;
  t0 = performance.now();
  const full = await collect(ctx, blobs);
  const deleteMs = ms(t0);
  if (noop.removed.jobs !== 0 || full.removed.jobs !== jobs || full.removed.blobs !== jobs) {
    throw new Error(`unexpected pass results: ${JSON.stringify({ noop: noop.removed, full: full.removed })}`);
  }
  console.log(JSON.stringify({
    bench: "gc-pass", store: pg ? "postgres" : "sqlite", blobStore: "fs", jobs, gcJobBatch: opts.gcJobBatch,
    baseline: { insertMs, insertPerJobMs: Math.round((insertMs / jobs) * 1000) / 1000 },
    noopPass: { ms: noopMs, blobsListed: jobs },
    deletePass: { ms: deleteMs, perJobMs: Math.round((deleteMs / jobs) * 1000) / 1000, removed: full.removed, reclaimedBytes: full.reclaimedBytes },
    ratioDeleteToInsert: Math.round((deleteMs / insertMs) * 100) / 100,
    loadavg: { before: load0.map((x) => Math.round(x * 100) / 100), after: loadavg().map((x) => Math.round(x * 100) / 100) },
    cpus: (await import("node:os")).cpus().length,
  }, null, 2));
} finally {
  await store.close();
  await rm(dir, { recursive: true, force: true });
  await db?.drop();
}
