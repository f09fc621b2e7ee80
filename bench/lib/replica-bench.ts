/**
 * The PostgreSQL side of bench/protocol-cycles.ts: replicas on a fresh database of the test
 * cluster (DELTACI_TEST_DATABASE_URL, from `scripts/test-services.sh start`), and the
 * cross-replica pickup latency (submit on A → lease answered on B).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { newKey, writeKeyFile } from "../../src/server/secrets/key-file.ts";
import { newToken } from "../../src/base/ids.ts";
import { createTestDatabase, type TestDatabase } from "../../test/support/pg-test-db.ts";
import { connectPg } from "../../src/server/db/pg/pg-state-store.ts";
import { Client, processCpuMs, sessions, spawnDeltaciPg, summary, jobSpec, type Child } from "./protocol-client.ts";

export interface Replicas {
  servers: Array<Child & { apiToken: string; controllerToken: string }>;
  /** CPU (ms) the PostgreSQL backends now serving the database have used so far, and their pids; 0 and none when /proc has not got them (a remote cluster). */
  backendCpuMs: (pids?: readonly number[]) => Promise<{ ms: number; pids: number[] }>;
  stop(): Promise<void>;
}

/** The pids of the backends connected to `url`'s database, other than the asking one. */
async function backendPids(url: string): Promise<number[]> {
  const sql = connectPg(url, { max: 1, applicationName: "deltaci-bench-probe" });
  try {
    const rows = await sql`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`;
    return rows.map((r) => r.pid as number);
  } finally {
    await sql.end({ timeout: 1 });
  }
}

function cpuOf(pids: readonly number[]): number {
  let ms = 0;
  for (const pid of pids) {
    try {
      ms += processCpuMs(pid);
    } catch {
      // a backend that exited, or a cluster on another host
    }
  }
  return ms;
}

/** `n` replicas on a fresh database, sharing their tokens and one secrets key file. */
export async function startReplicas(n: number, args: string[]): Promise<Replicas> {
  const db: TestDatabase = await createTestDatabase();
  const keyDir = await mkdtemp(join(tmpdir(), "deltaci-bench-key-"));
  await writeKeyFile(join(keyDir, "secrets-key"), [newKey()], true);
  const tokens = { apiToken: newToken("api"), controllerToken: newToken("controller") };
  const servers: Replicas["servers"] = [];
  const stop = async () => {
    for (const s of servers) await s.stop();
    await db.drop();
    await rm(keyDir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < n; i++) servers.push(await spawnDeltaciPg(db.url, tokens, ["--secrets-key-file", join(keyDir, "secrets-key"), ...args]));
  } catch (err) {
    await stop();
    throw err;
  }
  const backendCpuMs = async (pids?: readonly number[]) => {
    const p = pids ? [...pids] : await backendPids(db.url);
    return { ms: cpuOf(p), pids: p };
  };
  return { servers, backendCpuMs, stop };
}

/**
 * `samples` times: a runner long-polls B, a job is submitted on A; ms from sending the submit to
 * B's lease answer. Interleaved with it, the same on one replica (submit on B, lease on B): the
 * baseline, so what crossing replicas costs (NOTIFY → LISTEN → B's wake-up) reads as the gap.
 */
export async function crossReplicaPickup(samples: number): Promise<{ cross: ReturnType<typeof summary>; sameReplica: ReturnType<typeof summary> }> {
  const r = await startReplicas(2, ["--lease-ttl", "5m"]);
  const [a, b] = r.servers as [Replicas["servers"][number], Replicas["servers"][number]];
  const ca = new Client(a.url);
  const cb = new Client(b.url);
  try {
    const sess = await sessions(cb, b.controllerToken, 2 * (samples + 5));
    const waiting = async () => ((await cb.call("GET", "/healthz", null)).body.leaseWaiters as number) === 1;
    const times = { cross: [] as number[], sameReplica: [] as number[] };
    for (let i = 0; i < sess.length; i++) {
      const submitOn = i % 2 === 0 ? { c: ca, token: a.apiToken, into: times.cross } : { c: cb, token: b.apiToken, into: times.sameReplica };
      const held = cb.call("POST", "/v1/runner/lease", sess[i] as string, { json: { waitMs: 30_000 } });
      while (!(await waiting())) await new Promise((res) => setTimeout(res, 5));
      const t0 = performance.now();
      await submitOn.c.call("POST", "/v1/jobs", submitOn.token, { json: { spec: jobSpec(), fork: false } });
      const l = await held;
      if (l.status !== 200) throw new Error(`pickup: lease answered ${l.status}`);
      if (i >= 10) submitOn.into.push(performance.now() - t0); // the first few warm up connections and plans
    }
    return { cross: summary(times.cross), sameReplica: summary(times.sameReplica) };
  } finally {
    await ca.close();
    await cb.close();
    await r.stop();
  }
}
