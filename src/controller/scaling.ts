/**
 * The controller's scaling math, pure: demand + pools + runners + policy → decisions.
 * No I/O, no clock (time comes in as `nowMs`); the reconcile loop executes the decisions.
 *
 * Rules, in order:
 * 1. Queued jobs first claim runners that will take them anyway: idle and starting runners of
 *    pools that can serve them (most constrained requirement sets first).
 * 2. What is left launches runners in eligible pools (most general pool first), one runner per
 *    queued job and never more: a burst of 500 jobs launches up to the limits, not 500.
 * 3. Each pool is topped up to `minIdle` unclaimed runners.
 * 4. Idle runners beyond that, idle for at least `idleGraceMs`, are drained.
 * Limits (`pool.max`, `policy.maxRunners`) count every live runner, draining ones included, and
 * are never exceeded. A pool in crash backoff launches nothing.
 */
import type { RequirementSet } from "../protocol/schemas.ts";
import { eligiblePools, requirementKey } from "./matching.ts";
import type { Decision, DemandEntry, Pool, RunnerView, ScalingPolicy } from "./types.ts";

export interface ScalingInput {
  nowMs: number;
  demand: readonly DemandEntry[];
  pools: readonly Pool[];
  runners: readonly RunnerView[];
  policy: ScalingPolicy;
  /** Pools in crash backoff: no launches before this time (ms since epoch). */
  blockedUntilMs?: Readonly<Record<string, number>>;
}

export interface ScalingPlan {
  decisions: Decision[];
  /** Requirement sets no pool can serve, with their queued counts. */
  unschedulable: Array<{ requirements: RequirementSet; queued: number }>;
  /** Queued jobs that a pool could serve but that wait for capacity (limits or backoff). */
  waiting: number;
}

interface PoolCount {
  pool: Pool;
  alive: number;
  /** Unclaimed runners that will take a job: starting + idle (not draining, not busy). */
  free: number;
  starting: number;
  idle: RunnerView[];
  launch: { demand: number; "min-idle": number };
}

export function planScaling(input: ScalingInput): ScalingPlan {
  const { pools, policy } = input;
  const counts = new Map<string, PoolCount>();
  for (const pool of pools) counts.set(pool.name, { pool, alive: 0, free: 0, starting: 0, idle: [], launch: { demand: 0, "min-idle": 0 } });
  let totalAlive = 0;
  let idleObserved = 0;
  let nonStartingAlive = 0;
  for (const r of input.runners) {
    totalAlive++;
    const c = counts.get(r.pool);
    if (!c) continue; // a runner of a pool no longer configured: counts against the global limit only
    c.alive++;
    if (r.state === "starting") {
      c.starting++;
      c.free++;
    } else if (r.state === "idle") {
      c.idle.push(r);
      c.free++;
      idleObserved++;
    }
    if (r.state === "idle" || r.state === "busy") nonStartingAlive++;
  }
  // A runner looks idle until its job's first process appears; the server's running count bounds
  // how many can really be idle (assuming every runner is ours; more controllers only drain less).
  const running = input.demand.reduce((n, d) => n + d.running, 0);
  const idleUpper = Math.max(0, nonStartingAlive - running);
  let excessIdle = Math.max(0, idleObserved - idleUpper);
  for (const c of [...counts.values()].sort((a, b) => b.idle.length - a.idle.length)) {
    const take = Math.min(excessIdle, c.idle.length);
    // Which ones are busy is unknown (the server hands a job to its longest waiting runner): none
    // of this pool's idle-looking runners is drained until their states are known.
    if (take > 0) c.idle = [];
    c.free -= take;
    excessIdle -= take;
  }

  const blocked = (p: Pool) => (input.blockedUntilMs?.[p.name] ?? 0) > input.nowMs;
  const headroom = (c: PoolCount) => Math.max(0, Math.min(c.pool.max - c.alive, policy.maxRunners - totalAlive));
  const launch = (c: PoolCount, n: number, reason: "demand" | "min-idle") => {
    c.alive += n;
    totalAlive += n;
    c.launch[reason] += n;
  };

  // 1 + 2: queued demand, most constrained requirement sets first.
  const entries = input.demand
    .filter((d) => d.queued > 0)
    .map((d) => ({ d, eligible: eligiblePools(pools, d.requirements).map((p) => counts.get(p.name) as PoolCount) }))
    .sort((a, b) => a.eligible.length - b.eligible.length || requirementKey(a.d.requirements).localeCompare(requirementKey(b.d.requirements)));
  const unschedulable: ScalingPlan["unschedulable"] = [];
  let waiting = 0;
  for (const { d, eligible } of entries) {
    if (eligible.length === 0) {
      unschedulable.push({ requirements: d.requirements, queued: d.queued });
      continue;
    }
    let remaining = d.queued;
    for (const c of eligible) {
      const take = Math.min(c.free, remaining);
      c.free -= take;
      remaining -= take;
    }
    for (const c of eligible) {
      if (remaining === 0) break;
      if (blocked(c.pool)) continue;
      const n = Math.min(headroom(c), remaining);
      launch(c, n, "demand");
      remaining -= n;
    }
    waiting += remaining;
  }

  // 3: keep each pool's warm runners.
  for (const c of counts.values()) {
    if (c.free >= c.pool.minIdle || blocked(c.pool)) continue;
    const n = Math.min(headroom(c), c.pool.minIdle - c.free);
    launch(c, n, "min-idle");
    c.free += n;
  }

  const decisions: Decision[] = [];
  for (const c of counts.values()) {
    for (const reason of ["demand", "min-idle"] as const) {
      if (c.launch[reason] > 0) decisions.push({ kind: "launch", pool: c.pool.name, count: c.launch[reason], reason });
    }
  }
  // 4: drain surplus idle runners, oldest idle first, only after the grace period.
  for (const c of counts.values()) {
    let surplus = Math.min(c.free - c.pool.minIdle, c.idle.length);
    const candidates = c.idle.filter((r) => input.nowMs - r.sinceMs >= policy.idleGraceMs).sort((a, b) => a.sinceMs - b.sinceMs || a.id.localeCompare(b.id));
    for (const r of candidates) {
      if (surplus <= 0) break;
      decisions.push({ kind: "drain", pool: c.pool.name, runnerId: r.id, reason: "surplus" });
      surplus--;
    }
  }
  return { decisions, unschedulable, waiting };
}
