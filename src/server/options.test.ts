import { test } from "node:test";
import assert from "node:assert/strict";
import { parseS3Url, resolveOptions, splitListen } from "./options.ts";

void test("listen addresses", () => {
  assert.deepEqual(splitListen("127.0.0.1:8181"), ["127.0.0.1", 8181]);
  assert.deepEqual(splitListen(":0"), ["127.0.0.1", 0]);
  assert.deepEqual(splitListen("[::1]:9000"), ["::1", 9000]);
  assert.throws(() => splitListen("nope"));
  assert.throws(() => splitListen("h:70000"));
});

void test("the heartbeat interval never exceeds the lease ttl", () => {
  const o = resolveOptions({ dataDir: "/tmp/x", leaseTtlMs: 1000, heartbeatIntervalMs: 10_000 });
  assert.equal(o.heartbeatIntervalMs, 1000);
  assert.equal(resolveOptions({ dataDir: "/tmp/x" }).durability, "full");
});

void test("blob store urls: s3://BUCKET[/prefix]", () => {
  assert.deepEqual(parseS3Url("s3://ci-blobs"), { bucket: "ci-blobs", prefix: "" });
  assert.deepEqual(parseS3Url("s3://ci-blobs/"), { bucket: "ci-blobs", prefix: "" });
  assert.deepEqual(parseS3Url("s3://ci-blobs/prod/eu/"), { bucket: "ci-blobs", prefix: "prod/eu/" });
  assert.throws(() => parseS3Url("https://ci-blobs"));
  assert.throws(() => parseS3Url("s3://Bad_Bucket"));
  assert.throws(() => parseS3Url("s3://ci-blobs/a/../b"));
  assert.throws(() => parseS3Url("s3://ci-blobs/a//b"));
});
