/**
 * The protocol fuzzer, CI-sized: a few thousand seeded requests at every endpoint of the real
 * server over loopback (test/support/fuzz/). The full 100k run is bench/protocol-fuzz.ts.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { runFuzz } from "./support/fuzz/driver.ts";
import { FuzzWorld } from "./support/fuzz/world.ts";

void test("fuzzed requests at every endpoint: no 5xx, no hang, no state change when refused, /healthz throughout", async () => {
  const world = await FuzzWorld.start();
  try {
    const rep = await runFuzz(world, { seed: 20261205, requests: 3000, batchSize: 100, concurrency: 8, requestTimeoutMs: 15_000 });
    assert.deepEqual(rep.failures, [], JSON.stringify(rep.failures.slice(0, 5), null, 1));
    assert.equal(rep.requests, 3000);
    // Every endpoint was hit, and refused requests were compared against an unchanged snapshot.
    assert.ok(Object.keys(rep.byEndpoint).length >= 25, Object.keys(rep.byEndpoint).join(", "));
    assert.ok(rep.batches.comparedUnchanged > 0, JSON.stringify(rep.batches));
    // Answers are read: a request whose outcome is unknown (no answer) is the exception.
    assert.ok(rep.batches.unknownOutcome <= rep.batches.total / 4, JSON.stringify(rep.batches));
    assert.ok(rep.healthz.probes > 0);
  } finally {
    await world.close();
  }
});
