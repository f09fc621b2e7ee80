import { test } from "node:test";
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { isDeltaError } from "../../base/errors.ts";
import { readCappedParts } from "./common.ts";

void test("readCappedParts: the chunks as they came, up to the limit", async () => {
  const s = new PassThrough();
  const read = readCappedParts(s, 10);
  s.write(Buffer.from("abcd"));
  s.end(Buffer.from("efghij"));
  assert.deepEqual((await read).map((b) => b.toString()), ["abcd", "efghij"]);
});

void test("readCappedParts: past the limit, E_TOO_LARGE and the stream destroyed", async () => {
  const s = new PassThrough();
  const read = readCappedParts(s, 5);
  s.write(Buffer.from("abc"));
  s.write(Buffer.from("def"));
  await assert.rejects(read, (err: unknown) => isDeltaError(err, "E_TOO_LARGE"));
  assert.equal(s.destroyed, true);
});

void test("readCappedParts: a stream that fails or closes early rejects", async () => {
  const failing = new PassThrough();
  const read = readCappedParts(failing, 100);
  failing.write(Buffer.from("abc"));
  failing.destroy(new Error("reset"));
  await assert.rejects(read, /reset/);
  const cut = new PassThrough();
  const early = readCappedParts(cut, 100);
  cut.destroy();
  await assert.rejects(early, { code: "ERR_STREAM_PREMATURE_CLOSE" });
});
