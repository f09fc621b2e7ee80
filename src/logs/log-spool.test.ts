import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { LogSpool, SPOOL_BLOCK_BYTES, SPOOL_FIRST_BLOCK_BYTES, SPOOL_RECENT_BLOCKS } from "./log-spool.ts";

const dir = mkdtempSync(join(tmpdir(), "deltaci-spool-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Deterministic bytes: the value at offset i is a function of i. */
const bytesAt = (from: number, len: number) => Buffer.from(Array.from({ length: len }, (_, k) => ((from + k) * 31 + 7) % 251));

void test("reads back every range, whether written to the file yet or still held", async () => {
  const spool = new LogSpool(join(dir, "a.spool"), 1 << 30);
  const sizes = [1, 65_536, 7, SPOOL_BLOCK_BYTES + 3, 65_536 * 3, 2 * SPOOL_BLOCK_BYTES, 100, 5];
  let total = 0;
  for (const s of sizes) {
    assert.equal(spool.append(bytesAt(total, s)), s);
    total += s;
  }
  assert.equal(spool.size, total);
  assert.equal(spool.lastByte, bytesAt(total - 1, 1)[0]);
  // Ranges: inside the file, inside the held block, and across the boundary between them.
  for (const [at, len] of [[0, 10], [SPOOL_BLOCK_BYTES - 5, 10], [total - 50, 50], [total - SPOOL_BLOCK_BYTES / 2, SPOOL_BLOCK_BYTES], [total - 3, 10], [1234, 3 * SPOOL_BLOCK_BYTES]] as const) {
    const want = Math.min(len, total - at);
    const buf = Buffer.alloc(len);
    assert.equal(await spool.readAt(at, buf), want, `readAt ${at}+${len}`);
    assert.deepEqual(buf.subarray(0, want), bytesAt(at, want));
    const sync = Buffer.alloc(len);
    assert.equal(spool.readAtSync(at, sync), want);
    assert.deepEqual(sync.subarray(0, want), bytesAt(at, want));
  }
  assert.equal(await spool.readAt(total, Buffer.alloc(4)), 0);
  spool.close();
  assert.deepEqual(readFileSync(join(dir, "a.spool")), bytesAt(0, total), "close writes what was held");
});

void test("reads behind the writer come from the recent blocks or the file, byte-exact", async () => {
  const spool = new LogSpool(join(dir, "r.spool"), 1 << 30);
  const piece = 65_536 + 13; // pipe-sized appends that straddle block boundaries
  let total = 0;
  while (total < (SPOOL_RECENT_BLOCKS + 3) * SPOOL_BLOCK_BYTES + 777) {
    spool.append(bytesAt(total, piece));
    total += piece;
  }
  const memStart = Math.floor(total / SPOOL_BLOCK_BYTES) * SPOOL_BLOCK_BYTES - SPOOL_RECENT_BLOCKS * SPOOL_BLOCK_BYTES;
  // In the file only, across the file/recent boundary, inside and across recent blocks, across recent/held.
  const ranges = [[0, 100], [memStart - 10, 20], [memStart - SPOOL_BLOCK_BYTES, 3 * SPOOL_BLOCK_BYTES], [memStart, 1], [memStart + 5, 2 * SPOOL_BLOCK_BYTES + 9], [memStart + SPOOL_BLOCK_BYTES - 1, 2], [total - SPOOL_BLOCK_BYTES - 1000, SPOOL_BLOCK_BYTES + 2000], [memStart, total - memStart]] as const;
  for (const [at, len] of ranges) {
    const want = Math.min(len, total - at);
    const buf = Buffer.alloc(len);
    assert.equal(await spool.readAt(at, buf), want, `readAt ${at}+${len}`);
    assert.ok(buf.subarray(0, want).equals(bytesAt(at, want)), `readAt ${at}+${len} bytes`);
    const sync = Buffer.alloc(len);
    assert.equal(spool.readAtSync(at, sync), want);
    assert.ok(sync.subarray(0, want).equals(bytesAt(at, want)), `readAtSync ${at}+${len} bytes`);
  }
  spool.close();
  assert.ok(readFileSync(join(dir, "r.spool")).equals(bytesAt(0, total)));
});

void test("the held block grows past its first size and keeps what it held", async () => {
  const spool = new LogSpool(join(dir, "c.spool"), 1 << 30);
  const first = SPOOL_FIRST_BLOCK_BYTES - 10;
  spool.append(bytesAt(0, first));
  const head = Buffer.alloc(first);
  assert.equal(await spool.readAt(0, head), first);
  assert.deepEqual(head, bytesAt(0, first));
  // the next append needs more than the first block: it grows, with the held bytes copied over
  spool.append(bytesAt(first, 100));
  spool.append(bytesAt(first + 100, SPOOL_BLOCK_BYTES));
  const total = first + 100 + SPOOL_BLOCK_BYTES;
  const all = Buffer.alloc(total);
  assert.equal(spool.readAtSync(0, all), total);
  assert.deepEqual(all, bytesAt(0, total));
  spool.close();
  assert.deepEqual(readFileSync(join(dir, "c.spool")), bytesAt(0, total));
});

void test("appends past the limit are cut, and the spool says so", () => {
  const spool = new LogSpool(join(dir, "b.spool"), 10);
  let heard = 0;
  spool.onAppend(() => heard++);
  assert.equal(spool.append(Buffer.from("12345678")), 8);
  assert.equal(spool.truncated, false);
  assert.equal(spool.append(Buffer.from("abcdef")), 2);
  assert.equal(spool.truncated, true);
  assert.equal(spool.append(Buffer.from("z")), 0);
  assert.equal(heard, 2);
  spool.close();
  assert.equal(readFileSync(join(dir, "b.spool"), "utf8"), "12345678ab");
});
