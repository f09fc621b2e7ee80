/**
 * Finished logs move to the blob store (engine/log-archive.ts) on a real server: a JumpClock
 * closes the tail window without waiting, and each check waits for a metric or a row to move,
 * never for a time. Runs on the filesystem blob store and on S3 (env from scripts/test-services.sh),
 * on SQLite, and on PostgreSQL with DELTACI_TEST_STORE=postgres.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { testS3Env } from "../src/config/server-config.ts";
import type { BlobStore } from "../src/server/blobs/blob-store.ts";
import { openBlobStore } from "../src/server/blobs/open-blob-store.ts";
import { connectPg } from "../src/server/db/pg/pg-state-store.ts";
import type { BlobStoreOptions, ServerOptions } from "../src/server/index.ts";
import { completeBody, JumpClock, startTestServer, type TestServer } from "./server-harness.ts";
import { until } from "./support/replicas.ts";

const HOUR = 3_600_000;
const TAIL_MS = 60_000;
const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

function s3Options(): BlobStoreOptions {
  const env = testS3Env();
  return {
    kind: "s3", bucket: env.bucket, prefix: `archive-test-${randomBytes(6).toString("hex")}/`, endpoint: env.endpoint, region: env.region,
    forcePathStyle: true, credentials: env.credentials,
  };
}

interface Rig {
  s: TestServer;
  clock: JumpClock;
  blobs: BlobStore;
  close(): Promise<void>;
}

/** A server whose archiver runs every 50 ms; leases last a day so clock jumps keep live attempts live. */
async function archiveServer(blobStore: BlobStoreOptions, over: Partial<ServerOptions> = {}): Promise<Rig> {
  const clock = new JumpClock();
  const s = await startTestServer({ clock, blobStore, tailWindowMs: TAIL_MS, logArchiveIntervalMs: 50, leaseTtlMs: 24 * HOUR, ...over });
  const blobs = await openBlobStore(blobStore, s.dir);
  return {
    s, clock, blobs,
    close: async () => {
      await blobs.close();
      await s.close();
    },
  };
}

/** Runs a job whose attempt sends `log` in pieces of `pieceBytes` and completes; returns its id and lease token. */
async function finishedJob(s: TestServer, log: Buffer, pieceBytes = 300_000): Promise<{ jobId: string; token: string }> {
  const jobId = await s.submit();
  const l = await s.lease(await s.runner(), 1000);
  assert.ok(l);
  for (let at = 0; at < log.length; at += pieceBytes) {
    assert.equal((await s.log(l.leaseToken, at, log.subarray(at, at + pieceBytes))).status, 202);
  }
  assert.equal((await s.complete(l.leaseToken, completeBody({ log: { bytes: log.length, sha256: sha(log) } }))).status, 200);
  return { jobId, token: l.leaseToken };
}

/** Bytes of the attempt's live copy left in the state store (SQLite: its file exists; PostgreSQL: chunk rows). */
async function liveCopy(s: TestServer, jobId: string): Promise<number> {
  if (s.db === null) return existsSync(join(s.dir, "logs", `${jobId}.1.log`)) ? 1 : 0;
  const sql = connectPg(s.db.url, { max: 1 });
  try {
    const [r] = await sql`SELECT COUNT(*)::int AS n FROM log_chunks WHERE job_id = ${jobId}`;
    return r?.n as number;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

async function getLog(s: TestServer, jobId: string, query = ""): Promise<{ raw: Buffer; headers: Record<string, unknown> }> {
  const r = await s.api("GET", `/v1/jobs/${jobId}/log${query}`);
  assert.equal(r.status, 200, `GET log${query}: ${r.status}`);
  return { raw: r.raw, headers: r.headers };
}

/** Waits until `n` more logs were archived than `from`. */
async function archived(s: TestServer, from: number, n: number): Promise<void> {
  await until(`${n} more logs archived`, async () => (await s.metric("deltaci_log_archives_total")) >= from + n, 60_000);
}

/** Waits until `n` more GC passes completed: then at least one began after this call. */
async function passes(s: TestServer, n = 2): Promise<void> {
  const start = await s.metric("deltaci_gc_passes_total");
  await until(`${n} GC passes`, async () => (await s.metric("deltaci_gc_passes_total")) >= start + n, 60_000);
}

for (const [label, blobStore] of [["fs", (): BlobStoreOptions => ({ kind: "fs" })], ["s3", s3Options]] as const) {
  void test(`${label}: a finished log moves to the blob store once its tail window closed, and reads stay byte-exact (offsets, follow)`, async () => {
    const r = await archiveServer(blobStore());
    const { s, clock, blobs } = r;
    try {
      const log = randomBytes(1_300_000);
      const { jobId, token } = await finishedJob(s, log);
      const empty = await finishedJob(s, Buffer.alloc(0));
      assert.ok((await getLog(s, jobId)).raw.equals(log), "read live");
      const before = { n: await s.metric("deltaci_log_archives_total"), bytes: await s.metric("deltaci_log_archived_bytes_total") };
      // Still in the tail window: nothing moves (the next pass would have to be wrong to move it).
      assert.equal((await s.log(token, log.length, "late line\n")).status, 202, "the tail window still takes appends");
      const full = Buffer.concat([log, Buffer.from("late line\n")]);

      // Readers all through the move see the same bytes.
      let moving = true;
      const readers = Array.from({ length: 3 }, async () => {
        let reads = 0;
        while (moving || reads === 0) {
          assert.ok((await getLog(s, jobId)).raw.equals(full), "a read racing the archive is byte-exact");
          reads++;
        }
      });
      clock.advance(TAIL_MS + 1000);
      try {
        await archived(s, before.n, 2);
      } finally {
        moving = false;
        await Promise.all(readers);
      }

      assert.equal(await liveCopy(s, jobId), 0, "the live copy is gone");
      assert.equal(await blobs.has(sha(full), full.length), true, "the log is one content-addressed blob");
      assert.equal((await s.metric("deltaci_log_archived_bytes_total")) - before.bytes, full.length);
      const whole = await getLog(s, jobId);
      assert.ok(whole.raw.equals(full));
      assert.equal(whole.headers["x-deltaci-log-bytes"], String(full.length));
      assert.equal(whole.headers["x-deltaci-log-truncated"], "0");
      assert.equal(whole.headers["x-deltaci-attempt"], "1");
      for (const offset of [1, 262_143, 262_144, 777_777, full.length - 1, full.length, full.length + 5]) {
        assert.ok((await getLog(s, jobId, `?offset=${offset}`)).raw.equals(full.subarray(offset)), `offset ${offset}`);
      }
      assert.ok((await getLog(s, jobId, "?follow=1")).raw.equals(full), "follow of a finished job ends with every byte");
      assert.ok((await getLog(s, jobId, "?follow=1&offset=1000000")).raw.equals(full.subarray(1_000_000)));
      assert.ok((await getLog(s, jobId, "?attempt=1&offset=5")).raw.equals(full.subarray(5)));
      const none = await getLog(s, empty.jobId);
      assert.equal(none.raw.length, 0);
      assert.equal(none.headers["x-deltaci-log-bytes"], "0");
      assert.equal((await s.status(jobId)).log.bytes, full.length);
      assert.equal((await s.log(token, full.length, "too late")).status, 409, "a final log takes nothing more");
    } finally {
      await r.close();
    }
  });

  void test(`${label}: the collector keeps an archived log's blob while its job is kept, and collects it with the job`, async () => {
    const r = await archiveServer(blobStore(), { retentionMs: 3 * HOUR, gcGraceMs: HOUR, gcIntervalMs: 50 });
    const { s, clock, blobs } = r;
    try {
      const log = randomBytes(200_000);
      const { jobId } = await finishedJob(s, log);
      const n = await s.metric("deltaci_log_archives_total");
      clock.advance(TAIL_MS + 1000);
      await archived(s, n, 1);

      // The blob is now older than the grace: a candidate, kept because the attempt references it.
      clock.advance(2 * HOUR);
      await passes(s);
      assert.equal(await blobs.has(sha(log), log.length), true, "a kept job's archived log stays");
      assert.ok((await getLog(s, jobId)).raw.equals(log));

      const before = { logs: await s.metric("deltaci_gc_reclaimed_bytes_total", "logs"), blobs: await s.metric("deltaci_gc_reclaimed_bytes_total", "blobs") };
      clock.advance(2 * HOUR);
      await passes(s);
      assert.equal((await s.api("GET", `/v1/jobs/${jobId}`)).status, 404, "the job is past retention");
      await until("the archived log's blob is collected", async () => !(await blobs.has(sha(log))), 60_000);
      assert.equal((await s.metric("deltaci_gc_reclaimed_bytes_total", "logs")) - before.logs, 0, "archived bytes are not counted as live log bytes");
      await passes(s);
      assert.ok((await s.metric("deltaci_gc_reclaimed_bytes_total", "blobs")) - before.blobs >= log.length, "they are counted as a blob");
    } finally {
      await r.close();
    }
  });
}
