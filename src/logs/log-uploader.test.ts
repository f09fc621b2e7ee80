import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { systemClock, type Clock } from "../base/clock.ts";
import { DeltaError } from "../base/errors.ts";
import { RetryPolicy } from "../client/retry-policy.ts";
import { LogSpool } from "./log-spool.ts";
import { LogUploader, type LogSink } from "./log-uploader.ts";

const dir = mkdtempSync(join(tmpdir(), "deltaci-uploader-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A server-side log held in memory, with the protocol's rules, and injectable faults. */
class FlakyLogServer implements LogSink {
  held: Buffer[] = [];
  committed = 0;
  puts = 0;
  limit = Infinity;
  private n = 0;
  private readonly retry = new RetryPolicy({ clock: systemClock, baseMs: 1, maxMs: 5 });
  constructor(private readonly faults: { failEvery?: number; gapEvery?: number; partialEvery?: number } = {}) {}

  put(start: number, bytes: Uint8Array, signal: AbortSignal) {
    return this.retry.run(async () => this.once(start, Buffer.from(bytes)), { signal });
  }

  private async once(start: number, bytes: Buffer) {
    this.puts++;
    const n = ++this.n;
    if (this.faults.failEvery && n % this.faults.failEvery === 0) throw new DeltaError("E_NETWORK", "reset");
    if (start > this.committed || (this.faults.gapEvery && n % this.faults.gapEvery === 0 && this.committed > 0)) {
      return { status: "gap" as const, committed: this.committed };
    }
    let fresh = bytes.subarray(this.committed - start);
    if (this.faults.partialEvery && n % this.faults.partialEvery === 0) fresh = fresh.subarray(0, Math.floor(fresh.length / 2));
    if (this.committed + fresh.length > this.limit) throw new DeltaError("E_LOG_LIMIT", "limit", { details: { status: 413 } });
    this.held.push(Buffer.from(fresh));
    this.committed += fresh.length;
    // Fault after commit: the response is lost, the client must resend idempotently.
    if (this.faults.failEvery && n % this.faults.failEvery === 1 && n > 1) throw new DeltaError("E_TIMEOUT", "lost answer");
    return { status: "accepted" as const, committed: this.committed };
  }
}

function uploader(spool: LogSpool, sink: LogSink) {
  return new LogUploader({ spool, sink, clock: systemClock, flushIntervalMs: 5, flushBytes: 64 * 1024, chunkBytes: 100_000 });
}

void describe("LogUploader", () => {
  void it("delivers every byte exactly once under resets, lost answers, gaps and partial commits", async () => {
    const spool = new LogSpool(join(dir, "a.log"), 1 << 30);
    const server = new FlakyLogServer({ failEvery: 4, gapEvery: 7, partialEvery: 5 });
    const up = uploader(spool, server);
    up.start();
    const written: Buffer[] = [];
    for (let i = 0; i < 300; i++) {
      const b = randomBytes(1 + ((i * 7919) % 20_000));
      written.push(b);
      spool.append(b);
      if (i % 50 === 0) await new Promise((r) => setImmediate(r));
    }
    const sum = await up.finish(AbortSignal.timeout(60_000));
    const all = Buffer.concat(written);
    assert.equal(sum.complete, true);
    assert.equal(sum.bytes, all.length);
    assert.deepEqual(Buffer.concat(server.held), all);
    assert.equal(sum.sha256, createHash("sha256").update(all).digest("hex"));
    spool.close();
  });

  void it("a quiet log's uploader holds a buffer sized to its log, not chunkBytes (a runner host runs many)", async () => {
    const spool = new LogSpool(join(dir, "quiet.log"), 1 << 30);
    const server = new FlakyLogServer();
    const held: number[] = [];
    const sink: LogSink = { put: (start, bytes, signal) => (held.push(bytes.buffer.byteLength), server.put(start, bytes, signal)) };
    const up = new LogUploader({ spool, sink, clock: systemClock, flushIntervalMs: 5, flushBytes: 64 * 1024, chunkBytes: 4 << 20 });
    up.start();
    spool.append(Buffer.from("hello\n"));
    const sum = await up.finish(AbortSignal.timeout(60_000));
    assert.equal(sum.bytes, 6);
    assert.ok(held.length > 0 && held.every((n) => n <= 64 * 1024), `buffers behind the PUTs: ${held.join(", ")} bytes`);
    spool.close();
  });

  void it("rewinds after a 412 and resends from the server's committed", async () => {
    const spool = new LogSpool(join(dir, "b.log"), 1 << 30);
    const server = new FlakyLogServer();
    const up = uploader(spool, server);
    const data = randomBytes(300_000);
    spool.append(data);
    await up.finish(AbortSignal.timeout(30_000));
    // The server lost its tail (say, restarted): it holds 1000 bytes and answers 412.
    server.held = [data.subarray(0, 1000)];
    server.committed = 1000;
    up.rewind(1000);
    const sum = await up.finish(AbortSignal.timeout(30_000));
    assert.deepEqual(Buffer.concat(server.held), data);
    assert.equal(sum.sha256, createHash("sha256").update(data).digest("hex"));
    spool.close();
  });

  void it("stops on E_LOG_LIMIT with the summary of what the server kept", async () => {
    const spool = new LogSpool(join(dir, "c.log"), 1 << 30);
    const server = new FlakyLogServer();
    server.limit = 150_000;
    const up = uploader(spool, server);
    const data = randomBytes(400_000);
    spool.append(data);
    const sum = await up.finish(AbortSignal.timeout(30_000));
    assert.equal(up.stopped, "limit");
    assert.equal(sum.complete, false);
    assert.equal(sum.bytes, server.committed);
    assert.equal(sum.sha256, createHash("sha256").update(data.subarray(0, server.committed)).digest("hex"));
    spool.close();
  });

  void it("flushes a small write without waiting for more output", async () => {
    const spool = new LogSpool(join(dir, "d.log"), 1 << 30);
    const server = new FlakyLogServer();
    const up = uploader(spool, server);
    up.start();
    spool.append(Buffer.from("one line\n"));
    while (server.committed < 9) await new Promise((r) => setTimeout(r, 2));
    assert.equal(Buffer.concat(server.held).toString(), "one line\n");
    await up.finish(AbortSignal.timeout(10_000));
    spool.close();
  });

  void it("the first flush waits an interval from the start: a job over before it sends its log in one PUT", async () => {
    const spool = new LogSpool(join(dir, "e.log"), 1 << 30);
    const server = new FlakyLogServer();
    // Time stands still: only finish() can send (a wait ends only when called off).
    const frozen: Clock = { now: () => 1_000, sleep: (_ms, signal) => new Promise((_resolve, reject) => signal?.addEventListener("abort", () => reject(signal.reason as Error), { once: true })) };
    const up = new LogUploader({ spool, sink: server, clock: frozen, flushIntervalMs: 250, flushBytes: 64 * 1024, chunkBytes: 100_000 });
    up.start();
    spool.append(Buffer.from("job-start\n"));
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    assert.equal(server.puts, 0, "nothing sent before the interval");
    spool.append(Buffer.from("job-end\n"));
    await up.finish(AbortSignal.timeout(10_000));
    assert.equal(server.puts, 1);
    assert.equal(Buffer.concat(server.held).toString(), "job-start\njob-end\n");
    spool.close();
  });

  void it("with PUTs in flight, arrivals and answers out of order still give every byte once and the right digest", async () => {
    const spool = new LogSpool(join(dir, "f.log"), 1 << 30);
    const server = new FlakyLogServer();
    let seed = 7;
    const jitter = () => new Promise<void>((r) => setTimeout(r, (seed = (seed * 48271) % 2147483647) % 4));
    let inFlight = 0;
    let maxInFlight = 0;
    // Each PUT reaches the server after a random delay (so a later one may arrive first and get
    // a 416), and its answer comes back after another one.
    const reordering: LogSink = {
      put: async (start, bytes, signal) => {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        try {
          await jitter();
          const res = await server.put(start, bytes, signal);
          await jitter();
          return res;
        } finally {
          inFlight--;
        }
      },
    };
    const up = new LogUploader({ spool, sink: reordering, clock: systemClock, flushIntervalMs: 1, flushBytes: 1, chunkBytes: 7_000, inFlight: 3 });
    up.start();
    const written: Buffer[] = [];
    for (let i = 0; i < 200; i++) {
      const b = randomBytes(1 + ((i * 7919) % 9_000));
      written.push(b);
      spool.append(b);
      if (i % 10 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    const sum = await up.finish(AbortSignal.timeout(60_000));
    const all = Buffer.concat(written);
    assert.ok(maxInFlight > 1, "PUTs overlapped");
    assert.equal(sum.complete, true);
    assert.deepEqual(Buffer.concat(server.held), all);
    assert.equal(sum.sha256, createHash("sha256").update(all).digest("hex"));
    spool.close();
  });

  void it("the spool cuts appends at its limit", () => {
    const spool = new LogSpool(join(dir, "e.log"), 10);
    assert.equal(spool.append(Buffer.from("12345678")), 8);
    assert.equal(spool.append(Buffer.from("abcd")), 2);
    assert.equal(spool.truncated, true);
    assert.equal(spool.size, 10);
    spool.close();
  });
});
