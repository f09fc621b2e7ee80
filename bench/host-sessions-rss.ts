/**
 * Does a runner host leak across sessions? A real `deltaci runner-host` process serves `--sessions`
 * one-job sessions (each job echoes, reads a secret and an env value), `--slots` at once, against
 * the server in this process. Measured on the host, at idle after a warm-up (the baseline, same
 * run) and again at idle after all sessions:
 *  - VmRSS after the host sat idle (no forced GC);
 *  - after a forced full GC (the heap snapshot taken on SIGUSR2 collects first): VmRSS, and the
 *    live JS heap (sum of the snapshot's self sizes) with the kinds of object that grew most.
 * Also half way through: what still grows in the second half is a leak, not JIT warm-up.
 * Prints one JSON document. Usage:
 *   tsx bench/host-sessions-rss.ts [--isolation oci|process] [--sessions 1000] [--slots 4] [--warmup 20]
 */
import { randomBytes, randomInt } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startServer } from "../src/server/index.ts";
import { growth, summarize, takeSnapshot, type HeapSummary } from "../test/support/heap-snapshot.ts";
import { registrationTokens, startHostClient, type HostClient } from "../test/support/host-client.ts";

const { values: args } = parseArgs({ options: { isolation: { type: "string", default: "oci" }, sessions: { type: "string", default: "1000" }, slots: { type: "string", default: "4" }, warmup: { type: "string", default: "20" } } });
const isolation = args.isolation === "process" ? "process" : "oci";
const [sessions, slots, warmup] = [Number(args.sessions), Number(args.slots), Number(args.warmup)];

const root = mkdtempSync(join(tmpdir(), "deltaci-bench-host-rss-"));
chmodSync(root, 0o711);
const workRoot = join(root, "work");
const snapDir = join(root, "heap");
mkdirSync(workRoot, { mode: 0o711 });
mkdirSync(snapDir);
const server = await startServer({ dataDir: join(root, "server"), port: 0, host: "127.0.0.1", durability: "normal" });
const rssMiB = (pid: number) => +(Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024).toFixed(1);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function submit(i: number): Promise<void> {
  const res = await fetch(`${server.url}/v1/jobs`, {
    method: "POST", headers: { authorization: `Bearer ${server.apiToken}`, "content-type": "application/json" },
    body: JSON.stringify({
      spec: {
        name: `rss-${i}`, runsOn: { labels: [] }, image: { kind: "host" }, env: { PLAIN: `v-${randomBytes(8).toString("hex")}` },
        steps: [{ name: "s", run: 'echo "job $PLAIN $TOP"' }],
        limits: { timeoutMs: 120_000, cpus: 1, memoryMiB: 256, diskMiB: 256, pids: 256, logMiB: 8 },
        network: { egress: "none" }, source: { kind: "none" }, caches: [], artifacts: [],
      },
      fork: false, secrets: { TOP: randomBytes(16).toString("hex") },
    }),
  });
  if (res.status !== 201) throw new Error(`submit: ${res.status} ${await res.text()}`);
}

/** Runs `n` jobs through `n` sessions, `slots` at a time; returns how many sessions did not end with code 0. */
async function serve(host: HostClient, n: number, tag: string): Promise<number> {
  for (let i = 0; i < n; i++) await submit(i);
  const tokens: string[] = [];
  while (tokens.length < n) tokens.push(...(await registrationTokens(server.url, server.controllerToken, Math.min(256, n - tokens.length))));
  let next = 0;
  let bad = 0;
  const lane = async () => {
    for (let i = next++; i < n; i = next++) {
      const exit = await host.session(`${tag}-${i}`, tokens[i] as string, server.url);
      if (exit.code !== 0) bad++;
    }
  };
  await Promise.all(Array.from({ length: slots }, lane));
  return bad;
}

/** The host at rest: RSS as it sits, then a forced GC (snapshot) and RSS again. */
async function atIdle(host: HostClient): Promise<{ rssMiB: number; rssAfterGcMiB: number; heap: HeapSummary }> {
  await sleep(5_000); // prewarms of the freed slots end; timers of ended sessions fire
  const rss = rssMiB(host.pid);
  const heap = summarize(await takeSnapshot(host.pid, snapDir));
  await sleep(2_000);
  return { rssMiB: rss, rssAfterGcMiB: rssMiB(host.pid), heap };
}

const host = await startHostClient({
  dir: root, workRoot, slotBase: randomInt(30_000, 50_000), slots, isolation, hostId: "bench-rss",
  args: ["--max-sessions", "0", "--max-age", "24h", "--log-level", "warn"],
  env: { NODE_OPTIONS: `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${snapDir}` },
});
try {
  const rssStartMiB = rssMiB(host.pid);
  const warmBad = await serve(host, warmup, "warm");
  const idle = await atIdle(host);
  // Half way, measured the same way: growth that goes on in the second half is a leak, not warm-up.
  const t0 = performance.now();
  const half = Math.floor(sessions / 2);
  let bad = await serve(host, half, "a");
  const t1 = performance.now();
  const mid = await atIdle(host);
  const t2 = performance.now();
  bad += await serve(host, sessions - half, "b");
  const wallS = (t1 - t0 + performance.now() - t2) / 1000;
  const after = await atIdle(host);
  const mib = (b: number) => +(b / 2 ** 20).toFixed(2);
  console.log(JSON.stringify({
    bench: "host-sessions-rss", isolation, sessions, slots, warmup, node: process.version,
    failedSessions: bad + warmBad, wallS: +wallS.toFixed(1), sessionsPerS: +(sessions / wallS).toFixed(1),
    rssMiB: {
      atStart: rssStartMiB, idleAfterWarmup: idle.rssMiB, idleAtHalf: mid.rssMiB, idleAfterSessions: after.rssMiB,
      gcAfterWarmup: idle.rssAfterGcMiB, gcAtHalf: mid.rssAfterGcMiB, gcAfterSessions: after.rssAfterGcMiB,
    },
    liveHeapMiB: { afterWarmup: mib(idle.heap.liveBytes), atHalf: mib(mid.heap.liveBytes), afterSessions: mib(after.heap.liveBytes), secondHalfGrowth: mib(after.heap.liveBytes - mid.heap.liveBytes) },
    heapNodes: { afterWarmup: idle.heap.nodes, atHalf: mid.heap.nodes, afterSessions: after.heap.nodes },
    grewMostFirstHalf: growth(idle.heap, mid.heap, 6).map((g) => `${g.kind} ${g.before}→${g.after}`),
    grewMostSecondHalf: growth(mid.heap, after.heap, 6).map((g) => `${g.kind} ${g.before}→${g.after}`),
    loadavg: loadavg().map((l) => +l.toFixed(2)),
  }, null, 1));
} finally {
  await host.stop();
  await server.close();
  rmSync(root, { recursive: true, force: true });
}
