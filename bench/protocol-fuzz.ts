/**
 * The protocol fuzzer's full run: ≥ 100,000 generated requests at every endpoint of the real
 * server over loopback (test/support/fuzz/), checking the invariants throughout. Prints one JSON
 * document: counts per endpoint and per status, batches compared, /healthz probes, load average.
 * Usage: tsx bench/protocol-fuzz.ts [requests=100000] [seed=1] [concurrency=16]
 */
import { loadavg } from "node:os";
import { runFuzz } from "../test/support/fuzz/driver.ts";
import { FuzzWorld } from "../test/support/fuzz/world.ts";

const requests = Number(process.argv[2] ?? 100_000);
const seed = Number(process.argv[3] ?? 1);
const concurrency = Number(process.argv[4] ?? 16);
const loadBefore = loadavg().map((x) => Math.round(x * 100) / 100);
const world = await FuzzWorld.start();
try {
  const rep = await runFuzz(world, { seed, requests, batchSize: 100, concurrency, requestTimeoutMs: 30_000 });
  console.log(JSON.stringify({ bench: "protocol-fuzz", loadavgBefore: loadBefore, ...rep, failures: rep.failures.slice(0, 20), failureCount: rep.failures.length }, null, 1));
  process.exitCode = rep.failures.length === 0 ? 0 : 1;
} finally {
  await world.close();
}
