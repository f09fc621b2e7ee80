import { test } from "node:test";
import assert from "node:assert/strict";
import { resolveOptions, splitListen } from "./options.ts";

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
