/**
 * The hold of an early log append (PUT ahead of `committed`): bounded by the lease's expiry,
 * and a real gap (the server holds less than the runner believes) costs one hold, after which
 * the runner's uploader resends from the server's `committed` and the log ends complete.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { systemClock, type Clock } from "../src/base/clock.ts";
import { HttpClient } from "../src/client/http.ts";
import { RetryPolicy } from "../src/client/retry-policy.ts";
import { RunnerClient } from "../src/client/runner-client.ts";
import { LogSpool } from "../src/logs/log-spool.ts";
import { LogUploader } from "../src/logs/log-uploader.ts";
import { LOG_ORDER_WAIT_MS } from "../src/server/engine/log-ops.ts";
import { startTestServer } from "./server-harness.ts";

/** Real time plus a jump offset; records every wait it is asked for (the hold asks one per turn). */
class RecordingClock implements Clock {
  offset = 0;
  readonly sleeps: number[] = [];
  now(): number {
    return Date.now() + this.offset;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    this.sleeps.push(ms);
    return systemClock.sleep(ms, signal);
  }
}

void test("an early append of a lease about to expire is held until the expiry at most, then refused as stale", async () => {
  const clock = new RecordingClock();
  const s = await startTestServer({ clock, leaseTtlMs: 30_000, sweepIntervalMs: 60_000 });
  try {
    await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    clock.offset = 30_000 - 400; // 400 ms of the lease left
    clock.sleeps.length = 0;
    const r = await s.log(l.leaseToken, 10, "ahead of a gap");
    assert.equal(r.status, 409, JSON.stringify(r.body));
    assert.equal(r.body.error.code, "E_LEASE_STALE");
    const holds = clock.sleeps.filter((ms) => ms < 60_000);
    assert.ok(holds.length > 0, "the append was held");
    assert.ok(holds.every((ms) => ms <= 400), `held past the lease's expiry: ${holds.join(", ")} ms (hold bound ${LOG_ORDER_WAIT_MS} ms)`);
  } finally {
    await s.close();
  }
});

void test("a real gap: the uploader resends from the server's committed after one hold, and the log is complete", async () => {
  const clock = new RecordingClock();
  const s = await startTestServer({ clock, leaseTtlMs: 30_000, sweepIntervalMs: 60_000 });
  const dir = mkdtempSync(join(tmpdir(), "deltaci-log-hold-"));
  const client = new RunnerClient({ http: new HttpClient(s.url, { timeoutMs: 10_000 }), retry: new RetryPolicy({ clock: systemClock }), requestTimeoutMs: 10_000 });
  try {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    const spool = new LogSpool(join(dir, "log"), 1 << 30);
    const data = Buffer.from(Array.from({ length: 20_000 }, (_, i) => `line ${i}\n`).join(""));
    spool.append(data.subarray(0, 50_000));
    const sink = { put: (start: number, bytes: Uint8Array, signal: AbortSignal) => client.putLog(l.leaseToken, start, bytes, { signal }) };
    const up = new LogUploader({ spool, sink, clock: systemClock, flushIntervalMs: 5, flushBytes: 64 * 1024, chunkBytes: 16 * 1024 });
    const first = await up.finish(AbortSignal.timeout(20_000));
    assert.equal(first.bytes, 50_000);
    // The runner now believes the server holds 80,000 bytes it never got (as after a server
    // that lost unsynced bytes): its next PUTs start past the server's committed end.
    spool.append(data.subarray(50_000));
    up.rewind(80_000);
    clock.sleeps.length = 0;
    const done = await up.finish(AbortSignal.timeout(20_000));
    assert.equal(done.complete, true);
    assert.equal(done.bytes, data.length);
    assert.equal(done.sha256, createHash("sha256").update(data).digest("hex"));
    const holds = clock.sleeps.filter((ms) => ms < 60_000);
    assert.ok(holds.length > 0 && holds.every((ms) => ms <= LOG_ORDER_WAIT_MS), holds.join(", "));
    assert.ok((await s.api("GET", `/v1/jobs/${jobId}/log`)).raw.equals(data));
    spool.close();
  } finally {
    await client.close();
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
