/** Resumable log append: committed offsets, gaps, overlaps, resends, the limit, the tail window, follow. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { appendFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { request } from "undici";
import Database from "better-sqlite3";
import { defaults } from "../src/config/defaults.ts";
import { startServer } from "../src/server/index.ts";
import { STAGE_MIN_BYTES } from "../src/server/engine/log-ops.ts";
import { completeBody, JumpClock, startTestServer, TestServer } from "./server-harness.ts";

const sha = (s: string | Buffer) => createHash("sha256").update(s).digest("hex");

void test("gap → 416 with committed; overlap and resend are idempotent", async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000 });
  try {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    assert.equal((await s.log(l.leaseToken, 0, "0123456789")).body.committed, 10);
    const gap = await s.log(l.leaseToken, 12, "xx");
    assert.equal(gap.status, 416);
    assert.equal(gap.body.committed, 10);
    assert.equal(gap.body.error.code, "E_RANGE");
    const resend = await s.log(l.leaseToken, 0, "0123456789");
    assert.equal(resend.status, 202);
    assert.equal(resend.body.committed, 10);
    const overlap = await s.log(l.leaseToken, 5, "56789abcde");
    assert.equal(overlap.body.committed, 15);
    const bad = await s.call("PUT", "/v1/runner/log", { token: l.leaseToken, body: Buffer.from("abc"), headers: { "content-type": "application/octet-stream", "content-range": "bytes 15-20/*" } });
    assert.equal(bad.status, 400, "Content-Range must match the body length");
    const noRange = await s.call("PUT", "/v1/runner/log", { token: l.leaseToken, body: Buffer.from("abc"), headers: { "content-type": "application/octet-stream" } });
    assert.equal(noRange.status, 400);
    const text = await s.api("GET", `/v1/jobs/${jobId}/log`);
    assert.equal(text.raw.toString(), "0123456789abcde");
    assert.equal(text.headers["x-content-type-options"], "nosniff");
    const tail = await s.api("GET", `/v1/jobs/${jobId}/log?offset=12`);
    assert.equal(tail.raw.toString(), "cde");
    assert.equal((await s.status(jobId)).log.bytes, 15);
  } finally {
    await s.close();
  }
});

void test("the log limit keeps what fits, answers 413 E_LOG_LIMIT and marks the log truncated", async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000, logLimitBytes: 16 });
  try {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    assert.equal((await s.log(l.leaseToken, 0, "0123456789")).status, 202);
    const over = await s.log(l.leaseToken, 10, "abcdefghij");
    assert.equal(over.status, 413);
    assert.equal(over.body.error.code, "E_LOG_LIMIT");
    assert.equal(over.body.committed, 16);
    assert.equal((await s.log(l.leaseToken, 16, "more")).status, 413);
    const st = await s.status(jobId);
    assert.deepEqual(st.log, { bytes: 16, truncated: true });
    assert.equal((await s.api("GET", `/v1/jobs/${jobId}/log`)).raw.toString(), "0123456789abcdef");
    // a truncated log does not block complete, whatever the runner counted
    const done = await s.complete(l.leaseToken, completeBody({ result: "failed", exitCode: null, failure: { reason: "log_limit", step: 0, message: "log limit" }, log: { bytes: 20, sha256: sha("x") } }));
    assert.equal(done.status, 200);
  } finally {
    await s.close();
  }
});

void test("an oversized chunk is 413 E_TOO_LARGE", async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000, logChunkLimitBytes: 1024 });
  try {
    await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    const r = await s.log(l.leaseToken, 0, Buffer.alloc(2048, 97));
    assert.equal(r.status, 413);
    assert.equal(r.body.error.code, "E_TOO_LARGE");
  } finally {
    await s.close();
  }
});

void test("tail window: a finished attempt may still send its last lines, until the window closes", async () => {
  const clock = new JumpClock();
  const s = await startTestServer({ leaseTtlMs: 30_000, tailWindowMs: 60_000, clock });
  try {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    const hb = s.heartbeat(l.leaseToken, { waitMs: 10_000 });
    await s.api("POST", `/v1/jobs/${jobId}/cancel`);
    assert.equal((await hb).body.cancel, "graceful");
    assert.equal((await s.complete(l.leaseToken, {}, "/v1/runner/cancel-ack")).status, 200);
    assert.equal((await s.status(jobId)).state, "canceled");
    const late = await s.log(l.leaseToken, 0, "last words\n");
    assert.equal(late.status, 202, JSON.stringify(late.body));
    clock.advance(61_000);
    const tooLate = await s.log(l.leaseToken, 11, "more\n");
    assert.equal(tooLate.status, 409);
    assert.equal(tooLate.body.error.code, "E_LEASE_STALE");
    assert.equal((await s.api("GET", `/v1/jobs/${jobId}/log`)).raw.toString(), "last words\n");
  } finally {
    await s.close();
  }
});

void test("follow streams bytes as they commit and ends when the job ends", async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000 });
  try {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    await s.log(l.leaseToken, 0, "one\n");
    const res = await request(`${s.url}/v1/jobs/${jobId}/log?follow=1`, { headers: { authorization: `Bearer ${s.srv.apiToken}` }, bodyTimeout: 120_000 });
    assert.equal(res.statusCode, 200);
    const got: string[] = [];
    let sent = false;
    for await (const chunk of res.body) {
      got.push(Buffer.from(chunk as Uint8Array).toString());
      if (!sent && got.join("") === "one\n") {
        sent = true;
        await s.log(l.leaseToken, 4, "two\n");
      } else if (got.join("") === "one\ntwo\n") {
        await s.complete(l.leaseToken, { log: { bytes: 8, sha256: sha("one\ntwo\n") } });
      }
    }
    assert.equal(got.join(""), "one\ntwo\n");
    assert.equal((await s.status(jobId)).state, "succeeded");
  } finally {
    await s.close();
  }
});

void test("follow of an attempt ends when that attempt is lost; the retry is followed by attempt number", async () => {
  const clock = new JumpClock();
  const s = await startTestServer({ leaseTtlMs: 30_000, maxAttempts: 2, clock });
  try {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    await s.log(l.leaseToken, 0, "attempt one\n");
    clock.advance(31_000);
    // attempt 1 by number: the sweeper may have expired it (queuing attempt 2) before this arrives
    const res = await request(`${s.url}/v1/jobs/${jobId}/log?follow=1&attempt=1`, { headers: { authorization: `Bearer ${s.srv.apiToken}` }, bodyTimeout: 120_000 });
    assert.equal(res.headers["x-deltaci-attempt"], "1");
    // no heartbeat: the lease expires and attempt 2 is queued; the stream of attempt 1 ends
    assert.equal(await res.body.text(), "attempt one\n");
    const st = await s.waitFor(jobId, (x) => x.attempts.length === 2);
    assert.equal(st.state, "queued");
    const l2 = await s.lease(await s.runner(), 1000);
    assert.ok(l2);
    await s.log(l2.leaseToken, 0, "attempt two\n");
    assert.equal((await s.api("GET", `/v1/jobs/${jobId}/log`)).raw.toString(), "attempt two\n");
    assert.equal((await s.api("GET", `/v1/jobs/${jobId}/log?attempt=1`)).raw.toString(), "attempt one\n");
    const list = await s.api("GET", "/v1/jobs?limit=5");
    assert.equal(list.body.jobs[0].jobId, jobId);
    assert.equal(list.body.jobs[0].attempts.length, 2);
  } finally {
    await s.close();
  }
});

void test("a follow of a queued job gets its headers before any log byte exists", { timeout: 60_000 }, async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000 });
  try {
    const jobId = await s.submit();
    // the job is queued: the answer's headers must come now (a held answer deadlocks this test)
    const res = await request(`${s.url}/v1/jobs/${jobId}/log?follow=1`, { headers: { authorization: `Bearer ${s.srv.apiToken}` }, bodyTimeout: 120_000 });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers["x-deltaci-attempt"], "1");
    assert.equal(res.headers["x-deltaci-log-bytes"], "0");
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    assert.equal((await s.log(l.leaseToken, 0, "late line\n")).status, 202);
    assert.equal((await s.complete(l.leaseToken, { log: { bytes: 10, sha256: createHash("sha256").update("late line\n").digest("hex") } })).status, 200);
    assert.equal(await res.body.text(), "late line\n");
  } finally {
    await s.close();
  }
});

void test("an append that arrives ahead of its offset waits for the one before it (two PUTs in flight)", async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000 });
  try {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    // The second chunk is sent first, as a pipelining runner's later PUT may overtake the earlier one.
    // (Without the hold, the server answers it 416 at once; a round trip lets it arrive first.)
    const ahead = s.log(l.leaseToken, 10, "abcdefghij");
    assert.equal((await s.status(jobId)).log.bytes, 0);
    const first = await s.log(l.leaseToken, 0, "0123456789");
    assert.equal(first.status, 202);
    const second = await ahead;
    assert.equal(second.status, 202, "held until its offset was committed, not 416");
    assert.equal(second.body.committed, 20);
    assert.equal((await s.api("GET", `/v1/jobs/${jobId}/log`)).raw.toString(), "0123456789abcdefghij");
  } finally {
    await s.close();
  }
});

/** Chunk rows of an attempt's log in state.db (read through a second connection: WAL). */
function chunkRows(dir: string, jobId: string): number {
  const db = new Database(join(dir, "state.db"), { readonly: true });
  try {
    return (db.prepare("SELECT COUNT(*) FROM log_chunks WHERE job_id = ?").pluck().get(jobId) as number) ?? 0;
  } finally {
    db.close();
  }
}

void test("a small log stays in the database; one that outgrows it moves to a file, byte-exact", async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000 }, { sqliteOnly: true });
  try {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    const file = join(s.dir, "logs", `${jobId}.1.log`);
    assert.equal((await s.log(l.leaseToken, 0, "hello ")).body.committed, 6);
    assert.equal((await s.log(l.leaseToken, 6, "world\n")).body.committed, 12);
    assert.equal(existsSync(file), false, "a small log makes no file");
    assert.equal(chunkRows(s.dir, jobId), 2);
    assert.equal((await s.api("GET", `/v1/jobs/${jobId}/log`)).raw.toString(), "hello world\n");
    // Past logInlineMaxBytes: the rows go to the file with the new bytes, and are deleted.
    const big = Buffer.alloc(defaults.logInlineMaxBytes, "x");
    assert.equal((await s.log(l.leaseToken, 12, big)).body.committed, 12 + big.length);
    assert.equal(chunkRows(s.dir, jobId), 0);
    const expected = Buffer.concat([Buffer.from("hello world\n"), big]);
    assert.ok(readFileSync(file).equals(expected));
    assert.ok((await s.api("GET", `/v1/jobs/${jobId}/log`)).raw.equals(expected));
    assert.equal((await s.log(l.leaseToken, expected.length, "tail")).body.committed, expected.length + 4);
    const all = Buffer.concat([expected, Buffer.from("tail")]);
    assert.ok((await s.api("GET", `/v1/jobs/${jobId}/log`)).raw.equals(all));
    const done = await s.call("POST", "/v1/runner/complete", { token: l.leaseToken, json: completeBody({ log: { bytes: all.length, sha256: sha(all) } }) });
    assert.equal(done.status, 200);
    assert.ok(!JSON.stringify((await s.status(jobId)).transitions).includes("digest differs"));
  } finally {
    await s.close();
  }
});

void test("bytes past the committed end of a log file are never served and are overwritten", async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000 }, { sqliteOnly: true });
  try {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    const first = Buffer.alloc(defaults.logInlineMaxBytes + 1, "a");
    assert.equal((await s.log(l.leaseToken, 0, first)).body.committed, first.length);
    const file = join(s.dir, "logs", `${jobId}.1.log`);
    assert.ok(readFileSync(file).equals(first), "a first append larger than logInlineMaxBytes goes to the file");
    // What a batch that rolled back (or a crash before the commit) leaves behind.
    appendFileSync(file, "GARBAGE-NOT-COMMITTED");
    assert.ok((await s.api("GET", `/v1/jobs/${jobId}/log`)).raw.equals(first));
    assert.equal((await s.status(jobId)).log.bytes, first.length);
    assert.equal((await s.log(l.leaseToken, first.length, "world")).body.committed, first.length + 5);
    const all = Buffer.concat([first, Buffer.from("world")]);
    assert.ok((await s.api("GET", `/v1/jobs/${jobId}/log`)).raw.equals(all));
    const done = await s.call("POST", "/v1/runner/complete", { token: l.leaseToken, json: completeBody({ log: { bytes: all.length, sha256: sha(all) } }) });
    assert.equal(done.status, 200);
    const st = await s.status(jobId);
    assert.equal(st.state, "succeeded");
    assert.ok(Array.isArray(st.transitions) && st.transitions.length > 0);
    assert.ok(!JSON.stringify(st.transitions).includes("digest differs"), "the running digest matches the committed bytes");
  } finally {
    await s.close();
  }
});

void test("a log file left by a move that did not commit is ignored while the rows hold the log", async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000 }, { sqliteOnly: true });
  try {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    assert.equal((await s.log(l.leaseToken, 0, "abc")).body.committed, 3);
    // What a move to a file leaves when its batch rolls back or the server dies before the commit.
    writeFileSync(join(s.dir, "logs", `${jobId}.1.log`), "XYZ-NOT-COMMITTED");
    assert.equal((await s.api("GET", `/v1/jobs/${jobId}/log`)).raw.toString(), "abc");
    assert.equal((await s.log(l.leaseToken, 3, "def")).body.committed, 6);
    assert.equal((await s.api("GET", `/v1/jobs/${jobId}/log`)).raw.toString(), "abcdef");
    const big = Buffer.alloc(defaults.logInlineMaxBytes, "z");
    assert.equal((await s.log(l.leaseToken, 6, big)).body.committed, 6 + big.length);
    assert.ok((await s.api("GET", `/v1/jobs/${jobId}/log`)).raw.equals(Buffer.concat([Buffer.from("abcdef"), big])));
  } finally {
    await s.close();
  }
});

void test("a log an older server kept in the log_chunks table past logInlineMaxBytes is still read and appended to there", async () => {
  const first = await startTestServer({ leaseTtlMs: 60_000 }, { sqliteOnly: true });
  let s: TestServer | null = null;
  try {
    const jobId = await first.submit();
    const l = await first.lease(await first.runner(), 1000);
    assert.ok(l);
    await first.srv.close();
    // What an older server left: the bytes as chunk rows, no log file.
    const old = Buffer.alloc(defaults.logInlineMaxBytes + 3, "o");
    const db = new Database(join(first.dir, "state.db"));
    db.prepare("INSERT INTO log_chunks(job_id, attempt, start_off, end_off, data) VALUES (?, 1, 0, ?, ?)").run(jobId, old.length, old);
    db.prepare("UPDATE attempts SET log_bytes = ? WHERE job_id = ? AND attempt = 1").run(old.length, jobId);
    db.close();
    s = new TestServer(await startServer({ dataDir: first.dir, host: "127.0.0.1", port: 0, leaseTtlMs: 60_000, heartbeatIntervalMs: 500, sweepIntervalMs: 100 }), first.dir);
    assert.ok((await s.api("GET", `/v1/jobs/${jobId}/log`)).raw.equals(old));
    assert.equal((await s.log(l.leaseToken, old.length, "def")).body.committed, old.length + 3);
    const all = Buffer.concat([old, Buffer.from("def")]);
    assert.ok((await s.api("GET", `/v1/jobs/${jobId}/log`)).raw.equals(all));
    assert.equal(existsSync(join(first.dir, "logs", `${jobId}.1.log`)), false, "appended to the table, not split across a file");
    const done = await s.call("POST", "/v1/runner/complete", { token: l.leaseToken, json: completeBody({ log: { bytes: all.length, sha256: sha(all) } }) });
    assert.equal(done.status, 200);
    const st = await s.status(jobId);
    assert.equal(st.state, "succeeded");
    assert.ok(Array.isArray(st.transitions) && st.transitions.length > 0);
  } finally {
    if (s) await s.close();
    else await first.close();
  }
});

void test("large appends staged before their transaction: out of order, overlapping committed bytes with other bytes, byte-exact", async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000 });
  try {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    const size = STAGE_MIN_BYTES + 4321;
    const first = Buffer.alloc(defaults.logInlineMaxBytes + 1, "a"); // the log moves to its file (SQLite)
    const b = Buffer.alloc(size, "b");
    const c = Buffer.alloc(size, "c");
    assert.equal((await s.log(l.leaseToken, 0, first)).body.committed, first.length);
    // The later PUT first: it is staged (past the committed end) and held until the one before commits.
    const ahead = s.log(l.leaseToken, first.length + size, c);
    assert.equal((await s.log(l.leaseToken, first.length, b)).status, 202);
    assert.equal((await ahead).body.committed, first.length + 2 * size);
    // A resend that overlaps committed bytes with other bytes: only what is past the committed end counts.
    const end = first.length + 2 * size;
    const d = Buffer.alloc(size, "d");
    assert.equal((await s.log(l.leaseToken, end - 1000, d)).body.committed, end - 1000 + size);
    const all = Buffer.concat([first, b, c, d.subarray(1000)]);
    assert.ok((await s.api("GET", `/v1/jobs/${jobId}/log`)).raw.equals(all), "committed bytes are never rewritten");
    const done = await s.call("POST", "/v1/runner/complete", { token: l.leaseToken, json: completeBody({ log: { bytes: all.length, sha256: sha(all) } }) });
    assert.equal(done.status, 200);
    assert.ok(!JSON.stringify((await s.status(jobId)).transitions).includes("digest differs"));
  } finally {
    await s.close();
  }
});
