/**
 * Finished logs move to the blob store (engine/log-archive.ts) on a real server: a JumpClock
 * closes the tail window without waiting, and each check waits for a metric or a row to move,
 * never for a time. Runs on the filesystem blob store and on S3 (env from scripts/test-services.sh),
 * on SQLite, and on PostgreSQL with DELTACI_TEST_STORE=postgres.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import type { BlobStore } from "../src/server/blobs/blob-store.ts";
import { FsBlobStore } from "../src/server/blobs/cas.ts";
import { openBlobStore } from "../src/server/blobs/open-blob-store.ts";
import { connectPg } from "../src/server/db/pg/pg-state-store.ts";
import type { BlobStoreOptions, ServerOptions } from "../src/server/index.ts";
import { completeBody, startBlobServer, TestServer, type BlobServer } from "./server-harness.ts";
import { testStoreIsPostgres } from "./support/pg-test-db.ts";
import { s3TestStore } from "./support/s3-test-store.ts";
import { waitForReadyUrl } from "./support/ready-url.ts";
import { ReplicaSet, until } from "./support/replicas.ts";

const ROOT = join(import.meta.dirname, "..");
const HOUR = 3_600_000;
const TAIL_MS = 60_000;
const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

const s3Options = () => s3TestStore("archive-test");

/** The flags of `deltaci server` for the store `o` (credentials from the AWS env of the test services). */
function s3Flags(o: BlobStoreOptions): string[] {
  if (o.kind !== "s3") throw new Error("an S3 store");
  return ["--blob-store", `s3://${o.bucket}/${o.prefix}`, "--s3-endpoint", o.endpoint ?? "", "--s3-region", o.region, "--s3-path-style"];
}

/** A server whose archiver runs every 50 ms; leases last a day so clock jumps keep live attempts live. */
function archiveServer(blobStore: BlobStoreOptions, over: Partial<ServerOptions> = {}): Promise<BlobServer> {
  return startBlobServer(blobStore, { tailWindowMs: TAIL_MS, logArchiveIntervalMs: 50, archiveLogs: true, leaseTtlMs: 24 * HOUR, ...over });
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

/** The web view's log route of a job, signed in with the API token. */
async function webLog(s: TestServer, jobId: string): Promise<(query: string) => Promise<Buffer>> {
  const signIn = await fetch(`${s.url}/web/session`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token: s.srv.apiToken }) });
  const cookie = (signIn.headers.get("set-cookie") ?? "").split(";")[0] ?? "";
  return async (query) => {
    const r = await fetch(`${s.url}/web/api/jobs/${jobId}/log${query}`, { headers: { cookie } });
    assert.equal(r.status, 200, `web log${query}: ${r.status}`);
    return Buffer.from(await r.arrayBuffer());
  };
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
      const web = await webLog(s, jobId);
      for (const query of ["", "?download=1", "?follow=1&offset=654321", "?offset=654321"]) {
        assert.ok((await web(query)).equals(full.subarray(query.includes("offset") ? 654_321 : 0)), `web view log${query}`);
      }
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

void test("with the archive off (PostgreSQL's default with a filesystem blob store; --archive-logs off), finished logs stay in the state store, read byte-exact, and GC keeps them", async () => {
  // On PostgreSQL the default decides (other replicas could not read this replica's disk); on SQLite, `off` asked.
  const r = await startBlobServer({ kind: "fs" }, {
    tailWindowMs: TAIL_MS, logArchiveIntervalMs: 50, leaseTtlMs: 24 * HOUR, retentionMs: 24 * HOUR, gcIntervalMs: 50,
    ...(testStoreIsPostgres() ? {} : { archiveLogs: false }),
  });
  const { s, clock } = r;
  try {
    assert.match(s.srv.logArchive, /^off/);
    const log = randomBytes(300_000);
    const { jobId } = await finishedJob(s, log);
    clock.advance(TAIL_MS + 1000);
    // The archive interval (50 ms) is the collector's: three passes of one are three chances for the other.
    await passes(s, 3);
    assert.equal(await s.metric("deltaci_log_archives_total"), 0, "nothing archived");
    assert.ok((await liveCopy(s, jobId)) > 0, "the live copy stays");
    assert.ok((await getLog(s, jobId)).raw.equals(log));
    assert.ok((await getLog(s, jobId, "?offset=123456")).raw.equals(log.subarray(123_456)));
  } finally {
    await r.close();
  }
});

/** A `deltaci server` child process to kill mid-archive, the state it keeps, and a way to hold its archive's commit back. */
interface CrashRig {
  api: TestServer;
  blobs: BlobStore;
  /** Blocks the commit of the job's archive (SQLite: the write lock; PostgreSQL: the job row); `missed` when it was already archived. */
  hold(jobId: string): Promise<{ missed: boolean; release(): Promise<void> }>;
  logBlob(jobId: string): Promise<string | null>;
  liveCopyBytes(jobId: string): Promise<number>;
  kill9(): Promise<void>;
  /** The server again, on the same state. */
  restart(): Promise<TestServer>;
  dispose(): Promise<void>;
}

const CHILD_FLAGS = ["--tail-window", "2s", "--archive-interval", "100ms"];

async function sqliteRig(): Promise<CrashRig> {
  const dir = await mkdtemp(join(tmpdir(), "deltaci-archive-crash-"));
  let child: { proc: ChildProcess; api: TestServer } | null = null;
  const start = async () => {
    // No sweeps (the archive is the only writer while the test holds the lock); the role is taken at start.
    const proc = spawn(process.execPath, [join(ROOT, "bin", "deltaci.js"), "server", "--listen", "127.0.0.1:0", "--data-dir", dir, "--sweep-interval", "1h", "--log-level", "warn", ...CHILD_FLAGS], {
      cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, DELTACI_API_TOKEN: "", DELTACI_CONTROLLER_TOKEN: "" },
    });
    const url = await waitForReadyUrl(proc);
    const token = async (name: string) => (await readFile(join(dir, name), "utf8")).trim();
    const srv = {
      url, apiToken: await token("api-token"), controllerToken: await token("controller-token"), apiTokenFile: null, controllerTokenFile: null,
      dataDir: dir, stateLocation: "", logArchive: "", close: async () => {},
    };
    child = { proc, api: new TestServer(srv, dir) };
    return child.api;
  };
  const kill9 = async () => {
    const proc = child?.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => proc.once("exit", () => r()));
    proc.kill("SIGKILL");
    await exited;
  };
  const row = (jobId: string) => {
    const db = new Database(join(dir, "state.db"), { readonly: true });
    try {
      return db.prepare("SELECT log_blob FROM attempts WHERE job_id = ?").get(jobId) as { log_blob: string | null };
    } finally {
      db.close();
    }
  };
  return {
    api: await start(), blobs: new FsBlobStore(dir), kill9, restart: start,
    hold: async (jobId) => {
      const db = new Database(join(dir, "state.db"));
      db.pragma("busy_timeout = 5000");
      db.exec("BEGIN IMMEDIATE");
      const missed = (db.prepare("SELECT log_blob FROM attempts WHERE job_id = ?").get(jobId) as { log_blob: string | null }).log_blob !== null;
      return { missed, release: async () => {
        db.exec("ROLLBACK");
        db.close();
      } };
    },
    logBlob: async (jobId) => row(jobId).log_blob,
    liveCopyBytes: async (jobId) => {
      const file = join(dir, "logs", `${jobId}.1.log`);
      return existsSync(file) ? statSync(file).size : 0;
    },
    dispose: async () => {
      await kill9();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Replicas share their blobs through S3 (a filesystem store would keep the log on one replica's disk). */
async function pgRig(): Promise<CrashRig> {
  const store = s3Options();
  const set = await ReplicaSet.create([...CHILD_FLAGS, ...s3Flags(store)]);
  const sql = connectPg(set.db.url, { max: 2 });
  const blobs = await openBlobStore(store, set.root);
  let replica = await set.start("a");
  return {
    api: replica.api, blobs,
    hold: async (jobId) => {
      const conn = await sql.reserve();
      await conn`BEGIN`;
      await conn`SELECT 1 FROM jobs WHERE id = ${jobId} FOR UPDATE`;
      const [r] = await conn`SELECT log_blob FROM attempts WHERE job_id = ${jobId}`;
      return { missed: r?.log_blob !== null, release: async () => {
        await conn`ROLLBACK`;
        conn.release();
      } };
    },
    logBlob: async (jobId) => ((await sql`SELECT log_blob FROM attempts WHERE job_id = ${jobId}`)[0]?.log_blob as string | null),
    liveCopyBytes: async (jobId) => ((await sql`SELECT COALESCE(SUM(end_off - start_off), 0)::int AS n FROM log_chunks WHERE job_id = ${jobId}`)[0]?.n as number),
    kill9: () => replica.kill9(),
    restart: async () => {
      replica = await set.start("a");
      return replica.api;
    },
    dispose: async () => {
      await blobs.close();
      await sql.end({ timeout: 1 });
      await set.close();
    },
  };
}

void test("a server killed between writing a log's blob and committing it loses nothing; started again, it archives the log", async () => {
  const rig = testStoreIsPostgres() ? await pgRig() : await sqliteRig();
  try {
    for (let tries = 0; ; tries++) {
      assert.ok(tries < 5, "the archive was caught between its blob write and its commit");
      const log = randomBytes(500_000);
      const { jobId } = await finishedJob(rig.api, log);
      const held = await rig.hold(jobId);
      if (held.missed) {
        await held.release();
        continue;
      }
      await until("the archiver wrote the blob", () => rig.blobs.has(sha(log), log.length), 60_000);
      await rig.kill9();
      await held.release();
      assert.equal(await rig.logBlob(jobId), null, "the archive never committed");
      assert.ok((await rig.liveCopyBytes(jobId)) >= log.length, "the live copy is whole");

      const api = await rig.restart();
      assert.ok((await getLog(api, jobId)).raw.equals(log), "read after the crash, from the live copy");
      await until("the log is archived after the restart", async () => (await rig.logBlob(jobId)) !== null, 60_000);
      assert.equal(await rig.logBlob(jobId), sha(log));
      await until("the live copy is dropped", async () => (await rig.liveCopyBytes(jobId)) === 0);
      assert.ok((await getLog(api, jobId)).raw.equals(log), "read from the blob");
      assert.ok((await getLog(api, jobId, "?offset=123456&follow=1")).raw.equals(log.subarray(123_456)));
      return;
    }
  } finally {
    await rig.dispose();
  }
});

void test("two replicas on one database: every finished log is archived exactly once and reads byte-exact on both", async () => {
  const set = await ReplicaSet.create(["--tail-window", "1s", "--archive-interval", "100ms", "--sweep-interval", "100ms", ...s3Flags(s3Options())]);
  const sql = connectPg(set.db.url, { max: 1 });
  try {
    const [a, b] = [await set.start("a"), await set.start("b")];
    const logs = new Map<string, Buffer>();
    for (let i = 0; i < 4; i++) {
      const log = randomBytes(50_000 + i * 70_000);
      logs.set((await finishedJob(i % 2 === 0 ? a.api : b.api, log, 64 * 1024)).jobId, log);
    }
    const pending = async () => ((await sql`SELECT COUNT(*)::int AS n FROM attempts WHERE log_blob IS NULL`)[0]?.n as number);
    await until("every log is archived", async () => (await pending()) === 0, 60_000);
    const total = (await a.api.metric("deltaci_log_archives_total")) + (await b.api.metric("deltaci_log_archives_total"));
    assert.equal(total, logs.size, "one archive per attempt across the replicas");
    assert.equal((await sql`SELECT COUNT(*)::int AS n FROM log_chunks`)[0]?.n, 0);
    for (const [jobId, log] of logs) {
      for (const r of [a, b]) assert.ok((await getLog(r.api, jobId)).raw.equals(log), `${jobId} on ${r.name}`);
    }
  } finally {
    await sql.end({ timeout: 1 });
    await set.close();
  }
});
