/**
 * Full protocol cycles per second: lease → heartbeat → log 4 KiB → complete, 16 concurrent
 * runners, against `deltaci server` in its own process: SQLite (durability full, then normal),
 * then PostgreSQL with 1 and 2 replicas (runners spread over them; server CPU is the replicas'
 * node processes; `dbCpuMsPerCycle` is the CPU of the PostgreSQL backends serving the bench's
 * database, read from /proc: the cluster runs on this host), then the cross-replica pickup latency.
 * Jobs and runner sessions are prepared before the clock starts, and each server first runs
 * WARMUP cycles (default: as many as measured; V8 optimizes the hot paths meanwhile), as the
 * baseline does. Baseline in the same run: requests/s of a bare Fastify JSON route with the same
 * concurrency and client, after 2,000 warm-up requests.
 * PostgreSQL: DELTACI_TEST_DATABASE_URL (`scripts/test-services.sh start`; a test cluster, fsync off).
 * Usage: tsx bench/protocol-cycles.ts [cycles=4000] [concurrency=16] [pickupSamples=100] [warmupCycles=cycles] [--sqlite-only|--pg-only|--pickup-only]
 * (--sqlite-only: the baseline and the two SQLite rounds, no PostgreSQL; --pg-only: the baseline and
 * the PostgreSQL rounds, no SQLite; for iterating on the server's hot path; --pickup-only: the
 * baseline and the cross-replica pickup, with its same-replica baseline)
 * Profile the servers under this load: DELTACI_BENCH_SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=DIR"
 * (one .cpuprofile per server process, written when it exits).
 */
import { performance } from "node:perf_hooks";
import { prepareCycles, runCycles } from "./lib/cycles.ts";
import { Client, spawnBare, spawnDeltaci, processCpuMs, type Child } from "./lib/protocol-client.ts";
import { crossReplicaPickup, startReplicas, type Replicas } from "./lib/replica-bench.ts";
import { loadavg } from "node:os";

const SQLITE_ONLY = process.argv.includes("--sqlite-only");
const PICKUP_ONLY = process.argv.includes("--pickup-only");
const PG_ONLY = PICKUP_ONLY || process.argv.includes("--pg-only");
const ARGS = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const CYCLES = Number(ARGS[0] ?? 4000);
const CONC = Number(ARGS[1] ?? 16);
const PICKUPS = Number(ARGS[2] ?? 100);
const WARMUP = Number(ARGS[3] ?? CYCLES);

async function bareRate(c: Client, total: number, pid: number): Promise<{ perSec: number; cpuMsPerRequest: number }> {
  let next = 0;
  const cpu0 = processCpuMs(pid);
  const t = performance.now();
  await Promise.all(Array.from({ length: CONC }, async () => {
    while (next++ < total) await c.call("POST", "/bare", null, { json: { state: "running", step: 0, logBytes: 0 } });
  }));
  return { perSec: total / ((performance.now() - t) / 1000), cpuMsPerRequest: (processCpuMs(pid) - cpu0) / total };
}

type Server = Child & { apiToken: string; controllerToken: string };

async function sqliteRate(durability: "full" | "normal"): Promise<Record<string, number | string>> {
  const srv = await spawnDeltaci(["--durability", durability, "--lease-ttl", "5m"]);
  try {
    return { store: "sqlite", durability, ...(await cycleRate([srv])) };
  } finally {
    await srv.stop();
  }
}

async function pgRate(replicas: number): Promise<Record<string, number | string>> {
  const r = await startReplicas(replicas, ["--lease-ttl", "5m"]);
  try {
    return { store: "postgres", replicas, ...(await cycleRate(r.servers, r.backendCpuMs)) };
  } finally {
    await r.stop();
  }
}

/** Cycles/s and the servers' CPU per cycle, after WARMUP unmeasured cycles on the same servers (errors: both runs). */
async function cycleRate(servers: Server[], backendCpuMs?: Replicas["backendCpuMs"]): Promise<Record<string, number | string>> {
  const clients = servers.map((s) => new Client(s.url));
  const c = clients[0] as Client;
  const srv = servers[0] as Server;
  try {
    const sess = await prepareCycles(c, srv, WARMUP + CYCLES);
    const warm = await runCycles(clients, sess.slice(0, WARMUP), CONC);
    const cpu = () => servers.reduce((n, s) => n + processCpuMs(s.proc.pid as number), 0);
    // The pools are full after the warm-up: the backends serving them now serve the measured cycles.
    const db0 = await backendCpuMs?.();
    const cpu0 = cpu();
    const t = performance.now();
    const errors = warm + (await runCycles(clients, sess.slice(WARMUP), CONC));
    const secs = (performance.now() - t) / 1000;
    const cpuMsPerCycle = (cpu() - cpu0) / CYCLES;
    const db = db0 && backendCpuMs && { dbCpuMsPerCycle: Math.round((((await backendCpuMs(db0.pids)).ms - db0.ms) / CYCLES) * 1000) / 1000, dbBackends: db0.pids.length };
    return {
      cycles: CYCLES, warmupCycles: WARMUP, seconds: Math.round(secs * 1000) / 1000, cyclesPerSec: Math.round(CYCLES / secs), requestsPerSec: Math.round((4 * CYCLES) / secs), errors,
      serverCpuMsPerCycle: Math.round(cpuMsPerCycle * 1000) / 1000,
      cyclesPerSecPerServerCore: Math.round(1000 / cpuMsPerCycle),
      ...db,
    };
  } finally {
    for (const x of clients) await x.close();
  }
}

async function main(): Promise<void> {
  const bare = await spawnBare();
  const b = new Client(bare.url);
  let bareReqPerSec: number;
  let bareCpuMsPerRequest: number;
  const load = loadavg()[0];
  try {
    await bareRate(b, 2000, bare.proc.pid as number);
    const r = await bareRate(b, CYCLES * 4, bare.proc.pid as number);
    bareReqPerSec = Math.round(r.perSec);
    bareCpuMsPerRequest = Math.round(r.cpuMsPerRequest * 1000) / 1000;
  } finally {
    await b.close();
    await bare.stop();
  }
  const full = PG_ONLY ? null : await sqliteRate("full");
  const normal = PG_ONLY ? null : await sqliteRate("normal");
  const pg1 = SQLITE_ONLY || PICKUP_ONLY ? null : await pgRate(1);
  const pg2 = SQLITE_ONLY || PICKUP_ONLY ? null : await pgRate(2);
  const pickup = SQLITE_ONLY ? null : await crossReplicaPickup(PICKUPS);
  process.stdout.write(JSON.stringify({
    bench: "protocol-cycles",
    concurrency: CONC,
    goal: "> 2000 cycles/s",
    full,
    normal,
    postgres1: pg1,
    postgres2: pg2,
    crossReplicaPickupMs: pickup && { ...pickup.cross, goalP50: 10, what: "submit sent on A → lease answered on B (long poll held there)" },
    sameReplicaPickupMs: pickup && { ...pickup.sameReplica, what: "baseline, interleaved: submit sent on B → lease answered on B" },
    postgresCluster: "test cluster from scripts/services/postgres.sh (fsync off); PostgreSQL's CPU not counted in serverCpuMsPerCycle (dbCpuMsPerCycle: its backends')",
    loadAverageAtStart: load,
    loadAverageAtEnd: loadavg()[0],
    baseline: { bareFastifyRequestsPerSec: bareReqPerSec, bareCyclesPerSecEquivalent: Math.round(bareReqPerSec / 4), bareServerCpuMsPerRequest: bareCpuMsPerRequest },
    ratioToBare: full && normal && {
      full: Math.round(((full.requestsPerSec as number) / bareReqPerSec) * 1000) / 1000,
      normal: Math.round(((normal.requestsPerSec as number) / bareReqPerSec) * 1000) / 1000,
      serverCpuPerRequestFull: Math.round(((full.serverCpuMsPerCycle as number) / 4 / bareCpuMsPerRequest) * 100) / 100,
    },
  }) + "\n");
}

await main();
