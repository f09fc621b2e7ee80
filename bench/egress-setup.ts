/**
 * Per-job cost of transparent egress (src/sandbox/oci/transparent-egress.ts). The slot's path
 * (netns, veth pair, addresses and route, nft table, listener) is made once per slot and reused;
 * a job only attaches its allowlist and proxy, and detaches at dispose. Measured: the per-job
 * attach/detach, against the one-time slot create/dispose (`forSlot`, fresh each round, outside
 * the per-job part), and the baseline every allowlisted job pays already, in the same run:
 * starting and closing the job's egress proxy. Each round: create a slot path, run `jobs` jobs on
 * it (proxy start, attach, detach, proxy close), dispose of it.
 * Then, end to end in the oci sandbox (real crun; skipped with ociRuns=0): create + step `true` +
 * dispose of an allowlisted job with and without `transparent`, round-robin in one slot whose path
 * was made by an untimed first transparent job (what a recycled slot's next job pays).
 * Prints one JSON document with p50/p90/max in ms and the load average before and after.
 * Usage: tsx bench/egress-setup.ts [rounds=10] [jobs=20] [ociRuns=10]
 */
import { randomInt } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { systemClock } from "../src/base/clock.ts";
import { runStep } from "../src/sandbox/conformance.ts";
import { CrunSandboxFactory } from "../src/sandbox/oci/crun-sandbox-factory.ts";
import { EgressProxy } from "../src/sandbox/oci/egress-proxy.ts";
import { slotInfo } from "../src/sandbox/slots.ts";
import type { SandboxSpec } from "../src/sandbox/types.ts";
import { TransparentEgress } from "../src/sandbox/oci/transparent-egress.ts";

const rounds = Number(process.argv[2] ?? 10);
const jobs = Number(process.argv[3] ?? 20);
const ociRuns = Number(process.argv[4] ?? 10);
const dir = mkdtempSync(join(tmpdir(), "deltaci-bench-egress-"));
const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined } as never;
const samples = { proxyStart: [] as number[], proxyClose: [] as number[], attach: [] as number[], detach: [] as number[], slotCreate: [] as number[], slotDispose: [] as number[] };
const index = randomInt(1000, 16_000);
const loadBefore = loadavg();

function stats(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => Math.round((s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? 0) * 1000) / 1000;
  return { n: s.length, p50: q(0.5), p90: q(0.9), max: q(1) };
}

try {
  for (let r = 0; r < rounds; r++) {
    let t = performance.now();
    const te = await TransparentEgress.forSlot(index);
    samples.slotCreate.push(performance.now() - t);
    try {
      for (let j = 0; j < jobs; j++) {
        const allow = ["example.test:443", `10.0.${r}.${j}:22`];
        t = performance.now();
        const proxy = await EgressProxy.start({ socketPath: join(dir, `p${j}.sock`), jobId: `job_${r}_${j}`, allow, auditLogPath: join(dir, "audit.jsonl"), logger: quiet, resolve: async () => [] });
        samples.proxyStart.push(performance.now() - t);
        t = performance.now();
        const attached = te.attach({ allow, proxy });
        samples.attach.push(performance.now() - t);
        t = performance.now();
        attached.detach();
        samples.detach.push(performance.now() - t);
        t = performance.now();
        await proxy.close();
        samples.proxyClose.push(performance.now() - t);
      }
    } finally {
      t = performance.now();
      await te.dispose();
      samples.slotDispose.push(performance.now() - t);
    }
  }
  const oci = ociRuns > 0 ? await ociJobs() : null;
  const conntrackLines = readFileSync("/proc/net/nf_conntrack", "latin1").split("\n").length - 1;
  const t = performance.now();
  for (let i = 0; i < 20; i++) readFileSync("/proc/net/nf_conntrack", "latin1");
  const conntrackReadMs = Math.round(((performance.now() - t) / 20) * 100) / 100;
  console.log(JSON.stringify({
    bench: "egress-setup", rounds, jobsPerRound: jobs,
    baseline: { proxyStartMs: stats(samples.proxyStart), proxyCloseMs: stats(samples.proxyClose) },
    perJob: { attachMs: stats(samples.attach), detachMs: stats(samples.detach) },
    perSlotOnce: { createMs: stats(samples.slotCreate), disposeMs: stats(samples.slotDispose) },
    ociJobCreateStepDisposeMs: oci,
    perConnection: { conntrackEntries: conntrackLines, conntrackReadMs },
    loadavgBefore: loadBefore.map((x) => Math.round(x * 100) / 100), loadavg: loadavg().map((x) => Math.round(x * 100) / 100),
  }, null, 1));
} finally {
  await TransparentEgress.reap(index);
  rmSync(dir, { recursive: true, force: true });
}

/** create + `true` + dispose, allowlist with and without transparent, round-robin in one slot. */
async function ociJobs() {
  const root = mkdtempSync(join(tmpdir(), "deltaci-bench-egress-oci-"));
  chmodSync(root, 0o755); // the sandbox's uids traverse it
  const factory = new CrunSandboxFactory({ clock: systemClock, logger: { info: () => {}, warn: () => {} } });
  const slot = slotInfo(randomInt(16_000, 30_000), join(root, "slots"));
  const spec = (transparent: boolean, n: number): SandboxSpec => ({
    jobId: `job_bench_${n}_${transparent ? "t" : "p"}`, slot, image: { kind: "host" },
    limits: { timeoutMs: 600_000, cpus: 1, memoryMiB: 512, diskMiB: 256, pids: 512, logMiB: 64 },
    network: { egress: "allowlist", allow: ["example.test:443"], ...(transparent ? { transparent: true } : {}) },
    sourceArchive: null, caches: [], auditLogPath: null,
  });
  const job = async (s: SandboxSpec) => {
    const t = performance.now();
    const sb = await factory.create(s);
    await runStep(sb, "true");
    await sb.dispose();
    return performance.now() - t;
  };
  const proxyOnly: number[] = [];
  const transparent: number[] = [];
  try {
    await job(spec(true, -1)); // makes the slot's path, untimed
    for (let i = 0; i < ociRuns; i++) {
      proxyOnly.push(await job(spec(false, i)));
      transparent.push(await job(spec(true, i)));
    }
  } finally {
    await factory.reapSlot(slot);
    await factory.close();
    rmSync(root, { recursive: true, force: true });
  }
  return { allowlist: stats(proxyOnly), allowlistTransparent: stats(transparent) };
}
