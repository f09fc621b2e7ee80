/**
 * Per-job set-up cost of transparent egress (src/sandbox/oci/transparent-egress.ts): veth pair,
 * addresses and route, nft table, listener; and its teardown. Baseline in the same run: starting
 * and closing the job's egress proxy, which every allowlisted job pays today. Each round uses a
 * fresh network namespace of its own (created and removed outside the timed part).
 * Prints one JSON document with p50/p90/max in ms and the load average.
 * Usage: tsx bench/egress-setup.ts [rounds=30]
 */
import { execFileSync } from "node:child_process";
import { randomInt } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { EgressProxy } from "../src/sandbox/oci/egress-proxy.ts";
import { TransparentEgress } from "../src/sandbox/oci/transparent-egress.ts";

const rounds = Number(process.argv[2] ?? 30);
const dir = mkdtempSync(join(tmpdir(), "deltaci-bench-egress-"));
const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined } as never;
const samples = { proxyStart: [] as number[], proxyClose: [] as number[], transparentSetUp: [] as number[], transparentDispose: [] as number[] };
const index = randomInt(1000, 16_000);
const loadBefore = loadavg();

function stats(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => Math.round((s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? 0) * 100) / 100;
  return { p50: q(0.5), p90: q(0.9), max: q(1) };
}

try {
  for (let i = 0; i < rounds; i++) {
    const ns = `dctb-${process.pid}-${i}`;
    execFileSync("ip", ["netns", "add", ns]);
    try {
      let t = performance.now();
      const proxy = await EgressProxy.start({ socketPath: join(dir, `p${i}.sock`), jobId: `job_${i}`, allow: ["example.test:443"], auditLogPath: join(dir, "audit.jsonl"), logger: quiet, resolve: async () => [] });
      samples.proxyStart.push(performance.now() - t);
      t = performance.now();
      const te = await TransparentEgress.setUp({ index, netns: { name: ns }, allow: ["example.test:443"], proxy });
      samples.transparentSetUp.push(performance.now() - t);
      t = performance.now();
      await te.dispose();
      samples.transparentDispose.push(performance.now() - t);
      t = performance.now();
      await proxy.close();
      samples.proxyClose.push(performance.now() - t);
    } finally {
      execFileSync("ip", ["netns", "del", ns]);
      await TransparentEgress.reap(index);
    }
  }
  const conntrackLines = readFileSync("/proc/net/nf_conntrack", "latin1").split("\n").length - 1;
  const t = performance.now();
  for (let i = 0; i < 20; i++) readFileSync("/proc/net/nf_conntrack", "latin1");
  const conntrackReadMs = Math.round(((performance.now() - t) / 20) * 100) / 100;
  console.log(JSON.stringify({
    bench: "egress-setup", rounds,
    baseline: { proxyStartMs: stats(samples.proxyStart), proxyCloseMs: stats(samples.proxyClose) },
    transparent: { setUpMs: stats(samples.transparentSetUp), disposeMs: stats(samples.transparentDispose) },
    perConnection: { conntrackEntries: conntrackLines, conntrackReadMs },
    loadavgBefore: loadBefore.map((x) => Math.round(x * 100) / 100), loadavg: loadavg().map((x) => Math.round(x * 100) / 100),
  }, null, 1));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
