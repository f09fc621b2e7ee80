/**
 * The one conformance suite every BlobStore passes (blob-store.test.ts runs it against the
 * filesystem store and against a real S3 server). Staged uploads go the way the store offers,
 * as the server drives them: presigned requests when `directUpload` gives some, else appends.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { isDeltaError } from "../../base/errors.ts";
import type { BlobInfo, BlobStore, DirectUpload } from "./blob-store.ts";

/** A store to test, and the multipart part size it was made with (0: no multipart). */
export interface StoreUnderTest {
  store: BlobStore;
  partSizeBytes: number;
  dispose(): Promise<void>;
}

const MiB = 1024 * 1024;
const info = (b: Buffer): BlobInfo => ({ sha256: createHash("sha256").update(b).digest("hex"), size: b.length });
const id = () => `t-${randomBytes(8).toString("hex")}`;

async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function put(url: string, body: Buffer, headers: Record<string, string> = {}): Promise<void> {
  // fetch sets Content-Length itself for a buffer (and may refuse a second one).
  const rest = Object.fromEntries(Object.entries(headers).filter(([k]) => k.toLowerCase() !== "content-length"));
  const res = await fetch(url, { method: "PUT", body, headers: rest });
  const text = await res.text();
  assert.ok(res.ok, `PUT ${new URL(url).pathname} -> ${res.status}: ${text.slice(0, 200)}`);
}

/** Sends `bytes` as upload `uploadId` of declared `size`; `skipPart` leaves one multipart part (or the second half) unsent. */
async function stage(store: BlobStore, uploadId: string, size: number, bytes: Buffer, skipPart?: number): Promise<DirectUpload | null> {
  const direct = await store.directUpload(uploadId, size);
  if (direct === null) {
    const upto = skipPart === undefined ? bytes.length : Math.floor(bytes.length / 2);
    await store.appendUpload(uploadId, 0, Readable.from([bytes.subarray(0, upto)]), size);
  } else if (direct.parts === null) {
    await put(direct.url, bytes, direct.headers);
  } else {
    for (const p of direct.parts) {
      if (p.partNumber !== skipPart) await put(p.url, bytes.subarray(p.offset, p.offset + p.size));
    }
  }
  return direct;
}

async function collectAll<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function rejects(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => isDeltaError(err, code) || assert.fail(`expected ${code}, got ${String(err)}`));
}

export function blobStoreConformance(name: string, make: () => Promise<StoreUnderTest>): void {
  void describe(`BlobStore conformance: ${name}`, () => {
    let t: StoreUnderTest;
    before(async () => {
      t = await make();
      await t.store.init();
    });
    after(async () => {
      await t.dispose();
    });

    void it("put → has → open is byte-exact, and a second put of the same bytes deduplicates", async () => {
      const b = randomBytes(300 * 1024 + 5);
      assert.deepEqual(await t.store.put(Readable.from([b]), b.length), info(b));
      assert.equal(await t.store.has(info(b).sha256), true);
      assert.equal(await t.store.has(info(b).sha256, b.length), true);
      assert.equal(await t.store.has(info(b).sha256, b.length + 1), false);
      assert.ok((await readAll(await t.store.open(info(b).sha256))).equals(b));
      assert.deepEqual(await t.store.put(Readable.from([b]), b.length, info(b)), info(b));
    });

    void it("openRange reads byte-exact ranges: the start, the middle, one byte, the end", async () => {
      const b = randomBytes(3 * MiB + 17);
      await t.store.put(Readable.from([b]), b.length);
      const sha = info(b).sha256;
      for (const [start, end] of [[0, 99], [MiB - 1, 2 * MiB + 4], [12345, 12345], [b.length - 1000, b.length - 1], [0, b.length - 1]] as const) {
        const got = await readAll(await t.store.openRange(sha, start, end));
        assert.ok(got.equals(b.subarray(start, end + 1)), `range ${start}-${end}: ${got.length} bytes`);
      }
      await rejects(t.store.openRange(info(randomBytes(8)).sha256, 0, 0), "E_NOT_FOUND");
      await rejects(t.store.openRange(sha, 10, 9), "E_INVALID");
    });

    void it("an empty blob is a blob", async () => {
      const e = Buffer.alloc(0);
      assert.deepEqual(await t.store.put(Readable.from([]), 0), info(e));
      assert.equal(await t.store.has(info(e).sha256, 0), true);
      assert.equal((await readAll(await t.store.open(info(e).sha256))).length, 0);
    });

    void it("an unknown digest is absent; open says E_NOT_FOUND; a malformed digest is not a key", async () => {
      const unknown = info(randomBytes(32)).sha256;
      assert.equal(await t.store.has(unknown), false);
      await rejects(t.store.open(unknown), "E_NOT_FOUND");
      assert.equal(await t.store.has("../../etc/passwd"), false);
      await rejects(t.store.open("../x"), "E_INVALID");
    });

    void it("put refuses a wrong expected digest and a body over its cap, keeping nothing", async () => {
      const b = randomBytes(4096);
      await rejects(t.store.put(Readable.from([b]), b.length, { ...info(b), sha256: info(randomBytes(8)).sha256 }), "E_DIGEST_MISMATCH");
      assert.equal(await t.store.has(info(b).sha256), false);
      await rejects(t.store.put(Readable.from([b]), b.length - 1), "E_TOO_LARGE");
      assert.equal(await t.store.has(info(b).sha256), false);
    });

    void it("a staged upload becomes visible only after finishUpload verifies it", async () => {
      const b = randomBytes(200 * 1024 + 3);
      const u = id();
      await stage(t.store, u, b.length, b);
      assert.equal(await t.store.has(info(b).sha256), false);
      await t.store.finishUpload(u, info(b));
      assert.ok((await readAll(await t.store.open(info(b).sha256))).equals(b));
    });

    void it("a large staged upload (multipart where the store has it) is byte-exact", async () => {
      const size = Math.max(2 * t.partSizeBytes, 2 * MiB) + 12345;
      const b = randomBytes(size);
      const u = id();
      const direct = await stage(t.store, u, size, b);
      if (t.partSizeBytes > 0) assert.equal(direct?.parts?.length, Math.ceil(size / t.partSizeBytes));
      await t.store.finishUpload(u, info(b));
      assert.ok((await readAll(await t.store.open(info(b).sha256))).equals(b));
    });

    void it("an interrupted upload resumes: asking again lists only what is missing", async () => {
      const size = Math.max(2 * t.partSizeBytes, 2 * MiB) + 777;
      const b = randomBytes(size);
      const u = id();
      const first = await stage(t.store, u, size, b, 2);
      if (first === null) {
        const have = await t.store.uploadOffset(u);
        assert.equal(have, Math.floor(size / 2));
        await rejects(t.store.appendUpload(u, have + 1, Readable.from([b.subarray(have + 1)]), size), "E_RANGE");
        assert.equal(await t.store.appendUpload(u, have, Readable.from([b.subarray(have)]), size), size);
      } else {
        const again = await t.store.directUpload(u, size);
        assert.deepEqual(again?.parts?.map((p) => p.partNumber), [2]);
        const p = again?.parts?.[0];
        assert.ok(p);
        await put(p.url, b.subarray(p.offset, p.offset + p.size));
        assert.deepEqual((await t.store.directUpload(u, size))?.parts, []);
      }
      await t.store.finishUpload(u, info(b));
      assert.ok((await readAll(await t.store.open(info(b).sha256))).equals(b));
    });

    void it("tampered bytes of the declared size are refused and nothing is kept", async () => {
      const b = randomBytes(100 * 1024);
      const evil = Buffer.from(b);
      evil[4242] = (evil[4242] ?? 0) ^ 0xff;
      const u = id();
      await stage(t.store, u, b.length, evil);
      await rejects(t.store.finishUpload(u, info(b)), "E_DIGEST_MISMATCH");
      assert.equal(await t.store.has(info(b).sha256), false);
      assert.equal(await t.store.has(info(evil).sha256), false);
      await rejects(t.store.finishUpload(u, info(b)), "E_DIGEST_MISMATCH");
    });

    void it("a short upload is refused and nothing is kept", async () => {
      const b = randomBytes(64 * 1024);
      const u = id();
      await stage(t.store, u, b.length, b.subarray(0, b.length - 10));
      await rejects(t.store.finishUpload(u, info(b)), "E_DIGEST_MISMATCH");
      assert.equal(await t.store.has(info(b).sha256), false);
    });

    void it("a multipart upload with a part missing is refused", async () => {
      const size = Math.max(2 * t.partSizeBytes, 2 * MiB) + 99;
      const b = randomBytes(size);
      const u = id();
      await stage(t.store, u, size, b, 2);
      await rejects(t.store.finishUpload(u, info(b)), "E_DIGEST_MISMATCH");
      assert.equal(await t.store.has(info(b).sha256), false);
    });

    void it("a discarded upload is gone, and discarding twice is fine", async () => {
      const b = randomBytes(10_000);
      const u = id();
      await stage(t.store, u, b.length, b);
      await t.store.discardUpload(u);
      await t.store.discardUpload(u);
      await rejects(t.store.finishUpload(u, info(b)), "E_DIGEST_MISMATCH");
    });

    void it("two uploads of the same bytes under different ids both finish, into one blob", async () => {
      const b = randomBytes(50_000);
      const [u1, u2] = [id(), id()];
      await Promise.all([stage(t.store, u1, b.length, b), stage(t.store, u2, b.length, b)]);
      await Promise.all([t.store.finishUpload(u1, info(b)), t.store.finishUpload(u2, info(b))]);
      assert.ok((await readAll(await t.store.open(info(b).sha256))).equals(b));
    });

    void it("listBlobs lists a stored blob with its size and time; deleteBlob removes it, twice is fine", async () => {
      const b = randomBytes(7_777);
      const before = Date.now();
      await t.store.put(Readable.from([b]), b.length);
      const listed = await collectAll(t.store.listBlobs());
      const mine = listed.find((x) => x.sha256 === info(b).sha256);
      assert.ok(mine, "the blob is listed");
      assert.equal(mine.size, b.length);
      // The store's clock (an object store's) may differ a little from ours.
      assert.ok(Math.abs(mine.modifiedAt - before) < 10 * 60_000, `modifiedAt ${mine.modifiedAt} near ${before}`);
      await t.store.deleteBlob(info(b).sha256);
      await t.store.deleteBlob(info(b).sha256);
      assert.equal(await t.store.has(info(b).sha256), false);
      assert.equal((await collectAll(t.store.listBlobs())).some((x) => x.sha256 === info(b).sha256), false);
    });

    void it("listUploads lists a staged upload by id, single and multipart; discarding removes it", async () => {
      const small = randomBytes(9_000);
      const big = randomBytes(Math.max(2 * t.partSizeBytes, 2 * MiB) + 5);
      const [u1, u2] = [id(), id()];
      await stage(t.store, u1, small.length, small);
      await stage(t.store, u2, big.length, big, 2);
      const ids = new Set((await collectAll(t.store.listUploads())).map((u) => u.uploadId));
      assert.ok(ids.has(u1) && ids.has(u2), `staged uploads listed: ${[...ids].join(", ")}`);
      await Promise.all([t.store.discardUpload(u1), t.store.discardUpload(u2)]);
      const left = new Set((await collectAll(t.store.listUploads())).map((u) => u.uploadId));
      assert.ok(!left.has(u1) && !left.has(u2));
    });
  });
}
