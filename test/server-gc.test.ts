/**
 * Retention and garbage collection (engine/collector.ts) on a real server: a JumpClock makes old
 * jobs old without waiting, a 50 ms collector interval runs passes, and each check waits for the
 * `deltaci_gc_passes_total` metric to move (a pass that began after the action finished), never
 * for a time. Runs on the filesystem blob store and on S3 (env from scripts/test-services.sh),
 * on SQLite, and on PostgreSQL with DELTACI_TEST_STORE=postgres.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import Database from "better-sqlite3";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { BlobStore } from "../src/server/blobs/blob-store.ts";
import type { BlobStoreOptions } from "../src/server/index.ts";
import { testStoreIsPostgres } from "./support/pg-test-db.ts";
import { s3TestStore } from "./support/s3-test-store.ts";
import { completeBody, jobSpec, JumpClock, startBlobServer, startTestServer, type BlobServer, type Json, type TestServer } from "./server-harness.ts";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

const s3Options = () => s3TestStore("gc-test");

type Gc = BlobServer;

/** Retention 1 h, grace 1 h, stale uploads after 1 h; leases last a day so a jump of hours keeps live attempts live. */
function gcServer(blobStore: BlobStoreOptions): Promise<Gc> {
  return startBlobServer(blobStore, { retentionMs: HOUR, gcGraceMs: HOUR, gcStaleUploadMs: HOUR, gcIntervalMs: 50, gcJobBatch: 2, leaseTtlMs: DAY });
}

/** `name{labels} value` lines of /metrics. */
function metric(s: TestServer, name: string, what?: string): Promise<number> {
  return s.metric(name, what);
}

/** Waits until `n` more passes completed: then at least one began after this call. */
async function passes(s: TestServer, n = 2): Promise<void> {
  const start = await metric(s, "deltaci_gc_passes_total");
  while ((await metric(s, "deltaci_gc_passes_total")) < start + n) await new Promise((r) => setTimeout(r, 20));
}

/** A leased job's lease token. */
async function leased(s: TestServer): Promise<{ jobId: string; token: string }> {
  const jobId = await s.submit();
  const l = await s.lease(await s.runner(), 1000);
  assert.ok(l);
  return { jobId, token: l.leaseToken };
}

/** POST create, retried while the blob is being collected (503, retryable); the body as answered. */
async function create(s: TestServer, token: string, name: string, data: Buffer): Promise<Json> {
  for (;;) {
    const r = await s.call("POST", "/v1/runner/artifacts", { token, json: { name, size: data.length, sha256: sha(data) } });
    if (r.status === 503) continue;
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body;
  }
}

/** Sends the first part of an upload without finishing it (fs: half through the server; s3: the presigned PUT, no commit). */
async function stageFirstPart(s: TestServer, token: string, created: Json, data: Buffer): Promise<void> {
  const up = created.upload;
  assert.ok(up, "the blob is not in the store yet: an upload is asked for");
  if (up.url.startsWith("/")) {
    const half = Math.floor(data.length / 2);
    const r = await s.call("PUT", up.url, {
      token, body: data.subarray(0, half), headers: { "content-type": "application/octet-stream", "content-range": `bytes 0-${half - 1}/${data.length}` },
    });
    assert.equal(r.status, 202, JSON.stringify(r.body));
  } else {
    const r = await fetch(up.url, { method: "PUT", body: data });
    assert.equal(r.status, 200, await r.text());
  }
}

/** Finishes what stageFirstPart began: 201 committed. */
async function finishUpload(s: TestServer, token: string, created: Json, data: Buffer): Promise<void> {
  const up = created.upload;
  const r = up.url.startsWith("/")
    ? await s.call("PUT", up.url, {
      token, body: data.subarray(Math.floor(data.length / 2)),
      headers: { "content-type": "application/octet-stream", "content-range": `bytes ${Math.floor(data.length / 2)}-${data.length - 1}/${data.length}` },
    })
    : await s.call("POST", up.commitUrl, { token });
  assert.equal(r.status, 201, JSON.stringify(r.body));
}

/** Stages bytes under `uploadId` straight in the store, as a server that died mid-upload leaves them. */
async function stageOrphan(blobs: BlobStore, uploadId: string, data: Buffer): Promise<void> {
  const direct = await blobs.directUpload(uploadId, data.length);
  if (direct === null) {
    assert.equal(await blobs.appendUpload(uploadId, 0, Readable.from([data]), data.length), data.length);
    return;
  }
  const r = await fetch(direct.url, { method: "PUT", body: data });
  assert.equal(r.status, 200, await r.text());
}

async function upload(s: TestServer, token: string, name: string, data: Buffer): Promise<void> {
  const created = await create(s, token, name, data);
  if (created.upload === null) return;
  await stageFirstPart(s, token, created, data);
  await finishUpload(s, token, created, data);
}

async function download(s: TestServer, jobId: string, name: string): Promise<Buffer> {
  const r = await s.api("GET", `/v1/jobs/${jobId}/artifacts/${name}`);
  assert.equal(r.status, 200, `download ${name}: ${r.status}`);
  return r.raw;
}

for (const [label, blobStore] of [["fs", (): BlobStoreOptions => ({ kind: "fs" })], ["s3", s3Options]] as const) {
  void test(`${label}: retention deletes old jobs with their logs, artifacts and blobs; keeps recent jobs and shared blobs`, async () => {
    const g = await gcServer(blobStore());
    const { s, clock, blobs } = g;
    try {
      const onlyOld = randomBytes(40_000);
      const shared = randomBytes(30_000);
      const logText = "an old job's log\n".repeat(100);
      const old = await leased(s);
      assert.equal((await s.log(old.token, 0, logText)).body.committed, logText.length);
      await upload(s, old.token, "only-old.bin", onlyOld);
      await upload(s, old.token, "shared.bin", shared);
      assert.equal((await s.complete(old.token, completeBody({ log: { bytes: logText.length, sha256: sha(logText) } }))).status, 200);
      const unusedRegistration = await s.ctl("POST", "/v1/controller/registrations", { count: 1, labels: [] });
      assert.equal(unusedRegistration.status, 201);
      const before = {
        blobs: await metric(s, "deltaci_gc_reclaimed_bytes_total", "blobs"), logs: await metric(s, "deltaci_gc_reclaimed_bytes_total", "logs"),
        registrations: await metric(s, "deltaci_gc_removed_total", "registrations"), runners: await metric(s, "deltaci_gc_removed_total", "runners"),
      };
      assert.ok(Number.isFinite(before.blobs), "the reclaimed-bytes metric is exported before any pass removed anything");

      clock.advance(2 * HOUR);
      const recent = await leased(s);
      await upload(s, recent.token, "shared.bin", shared);
      const onlyRecent = randomBytes(20_000);
      await upload(s, recent.token, "only-recent.bin", onlyRecent);
      assert.equal((await s.complete(recent.token)).status, 200);
      await passes(s);

      assert.equal((await s.api("GET", `/v1/jobs/${old.jobId}`)).status, 404, "the old job is gone");
      assert.equal((await s.api("GET", `/v1/jobs/${old.jobId}/log`)).status, 404, "its log is gone");
      if (!testStoreIsPostgres()) assert.equal(existsSync(join(s.dir, "logs", `${old.jobId}.1.log`)), false, "its log file is gone");
      assert.equal(await blobs.has(sha(onlyOld)), false, "a blob only the old job referenced is collected");
      assert.equal((await s.status(recent.jobId)).state, "succeeded", "the recent job stays");
      assert.ok((await download(s, recent.jobId, "shared.bin")).equals(shared), "a blob a kept job shares survives");
      assert.ok((await download(s, recent.jobId, "only-recent.bin")).equals(onlyRecent));
      assert.ok((await metric(s, "deltaci_gc_reclaimed_bytes_total", "blobs")) - before.blobs >= onlyOld.length, "reclaimed bytes count the blob");
      assert.ok((await metric(s, "deltaci_gc_reclaimed_bytes_total", "logs")) - before.logs >= logText.length, "reclaimed bytes count the log");
      assert.ok((await metric(s, "deltaci_gc_removed_total", "registrations")) - before.registrations >= 1, "expired registration tokens are removed");
      assert.ok((await metric(s, "deltaci_gc_removed_total", "runners")) - before.runners >= 1, "the old job's runner (session expired, no live attempt) is removed");
    } finally {
      await g.close();
    }
  });

  void test(`${label}: uploads in flight during passes are never broken; abandoned ones are removed`, async () => {
    const g = await gcServer(blobStore());
    const { s, clock, blobs } = g;
    try {
      // A staged upload nothing owns (a server that crashed mid-upload leaves one), and a job whose content a live job will reuse.
      const orphan = `art_orphan${randomBytes(4).toString("hex")}`;
      await stageOrphan(blobs, orphan, randomBytes(50_000));
      const ended = await leased(s);
      const reused = randomBytes(25_000);
      await upload(s, ended.token, "reused.bin", reused);
      assert.equal((await s.complete(ended.token)).status, 200);

      const live = await leased(s);
      const inFlightData = randomBytes(60_000);
      const inFlight = await create(s, live.token, "in-flight.bin", inFlightData);
      await stageFirstPart(s, live.token, inFlight, inFlightData);
      const before = await metric(s, "deltaci_gc_removed_total", "uploads");

      // Everything is now past retention, grace and the stale-upload age; the live job is not terminal.
      clock.advance(2 * HOUR);
      // Races the collector on purpose: the blob is either still there (referenced from now on),
      // being collected (503, retried) or gone (uploaded again). It must end up whole either way.
      await upload(s, live.token, "reused.bin", reused);
      await passes(s);
      await finishUpload(s, live.token, inFlight, inFlightData);
      await passes(s);

      assert.equal((await s.api("GET", `/v1/jobs/${ended.jobId}`)).status, 404, "the ended job is past retention");
      const gotInFlight = await download(s, live.jobId, "in-flight.bin");
      assert.equal(sha(gotInFlight), sha(inFlightData), "the upload in flight committed whole");
      const gotReused = await download(s, live.jobId, "reused.bin");
      assert.equal(sha(gotReused), sha(reused), "a reused blob survives the passes");
      assert.equal(await blobs.has(sha(inFlightData)), true);
      assert.equal(await blobs.has(sha(reused)), true);
      const staged: string[] = [];
      for await (const u of blobs.listUploads()) staged.push(u.uploadId);
      assert.ok(!staged.includes(orphan), `the abandoned upload is removed (left: ${staged.join(", ")})`);
      assert.ok((await metric(s, "deltaci_gc_removed_total", "uploads")) - before >= 1);
      assert.equal((await s.complete(live.token)).status, 200);
    } finally {
      await g.close();
    }
  });
}

void test("without --retention nothing is collected", async () => {
  const clock = new JumpClock();
  const s = await startTestServer({ clock, gcIntervalMs: 20, leaseTtlMs: DAY });
  try {
    const j = await leased(s);
    const data = randomBytes(1000);
    await upload(s, j.token, "kept.bin", data);
    assert.equal((await s.complete(j.token)).status, 200);
    clock.advance(400 * DAY);
    // A negative: give a collector ten intervals to (wrongly) run, then look.
    await new Promise((r) => setTimeout(r, 10 * 20));
    await s.waitFor(j.jobId, (st) => st.state === "succeeded");
    assert.ok((await download(s, j.jobId, "kept.bin")).equals(data));
    // Last: a server closed right after a download waits out the keep-alive (about 70 s here).
    assert.equal(await metric(s, "deltaci_gc_passes_total"), 0);
  } finally {
    await s.close();
  }
});

void test("a blob marked for collection: artifact create, source upload and submit answer 503 E_UNAVAILABLE until the mark is gone", async () => {
  // SQLite only: the mark is put in by hand, through a second connection to state.db (WAL), as a pass would between marking and clearing.
  const s = await startTestServer({ retentionMs: DAY }, { sqliteOnly: true });
  const db = new Database(join(s.dir, "state.db"));
  db.pragma("busy_timeout = 5000");
  try {
    const archive = randomBytes(3000);
    const up = await s.call("POST", "/v1/sources", { token: s.srv.apiToken, body: archive, headers: { "content-type": "application/octet-stream" } });
    assert.equal(up.status, 201);
    const art = randomBytes(2000);
    const { token } = await leased(s);
    for (const b of [archive, art]) db.prepare("INSERT INTO blob_marks(sha256, size, marked_at) VALUES (?, ?, 1)").run(sha(b), b.length);

    const created = await s.call("POST", "/v1/runner/artifacts", { token, json: { name: "a.bin", size: art.length, sha256: sha(art) } });
    assert.equal(created.status, 503);
    assert.equal(created.body.error.code, "E_UNAVAILABLE");
    const again = await s.call("POST", "/v1/sources", { token: s.srv.apiToken, body: archive, headers: { "content-type": "application/octet-stream" } });
    assert.equal(again.status, 503, "the store kept its old copy (dedup), which is about to go");
    const submit = await s.api("POST", "/v1/jobs", { spec: jobSpec({ source: { kind: "archive", sha256: sha(archive) } }), fork: false });
    assert.equal(submit.status, 503);
    assert.equal(submit.body.error.code, "E_UNAVAILABLE");

    db.prepare("DELETE FROM blob_marks").run();
    assert.equal((await s.call("POST", "/v1/runner/artifacts", { token, json: { name: "a.bin", size: art.length, sha256: sha(art) } })).status, 201);
    assert.equal((await s.api("POST", "/v1/jobs", { spec: jobSpec({ source: { kind: "archive", sha256: sha(archive) } }), fork: false })).status, 201);
  } finally {
    db.close();
    await s.close();
  }
});
