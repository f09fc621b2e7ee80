/**
 * The fleet page's data: declared pools (with max and min-idle), live runners (waiting for a job
 * in a lease long poll, or holding a lease), demand per requirement set, unschedulable jobs, and
 * a short in-memory history for the time charts (queue depth, pickup latency, jobs finished per
 * minute), sampled by the server itself.
 */
import type { Clock } from "../../base/clock.ts";
import type { JobState } from "../../protocol/schemas.ts";
import type { EngineContext } from "../engine/context.ts";
import { demand } from "../engine/controller-ops.ts";
import { TERMINAL_JOB } from "../engine/transitions.ts";

export interface FleetSample {
  at: string;
  queued: number;
  running: number;
  /** Mean lease latency (queued → leased) of first attempts leased since the previous sample; null when none. */
  pickupMs: number | null;
  /** Jobs that reached a terminal state since the previous sample, per minute. */
  finishedPerMin: number;
}

const LIVE: readonly JobState[] = ["leased", "running", "canceling"];
/** Emitted after each sample, so the fleet page's stream refreshes the charts and idle runners. */
export const FLEET_SAMPLED = "web:fleet-sampled";
const LIST_MAX = 200;
/** Newest jobs looked at per sample for pickup latency. */
const PICKUP_WINDOW_JOBS = 200;

/** A ring of samples; `sample()` is called every `intervalMs` by `runFleetSampler`. */
export class FleetHistory {
  readonly samples: FleetSample[] = [];
  private lastAt: number | null = null;
  private lastFinished: number | null = null;

  constructor(private readonly max: number) {}

  async sample(ctx: EngineContext): Promise<void> {
    const now = ctx.clock.now();
    const counts = new Map((await ctx.store.countJobsByState()).map((c) => [c.state, c.count]));
    const finished = [...TERMINAL_JOB].reduce((n, s) => n + (counts.get(s) ?? 0), 0);
    const since = this.lastAt ?? now - 60_000;
    const lat: number[] = [];
    for (const j of await ctx.store.listJobs({ limit: PICKUP_WINDOW_JOBS })) {
      const a = await ctx.store.getAttempt(j.id, 1);
      if (a?.startedAt != null && a.startedAt > since && a.startedAt <= now) lat.push(a.startedAt - j.createdAt);
    }
    const minutes = Math.max((now - since) / 60_000, 1 / 60);
    this.samples.push({
      at: new Date(now).toISOString(),
      queued: counts.get("queued") ?? 0,
      running: LIVE.reduce((n, s) => n + (counts.get(s) ?? 0), 0),
      pickupMs: lat.length > 0 ? Math.round(lat.reduce((x, y) => x + y, 0) / lat.length) : null,
      finishedPerMin: this.lastFinished === null ? 0 : Math.round(((finished - this.lastFinished) / minutes) * 10) / 10,
    });
    if (this.samples.length > this.max) this.samples.shift();
    this.lastAt = now;
    this.lastFinished = finished;
  }
}

export async function runFleetSampler(ctx: EngineContext, history: FleetHistory, intervalMs: number, clock: Clock, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    try {
      await history.sample(ctx);
      ctx.events.emit(FLEET_SAMPLED);
    } catch (err) {
      ctx.logger?.warn({ err }, "fleet sample failed");
    }
    await clock.sleep(intervalMs, signal).catch(() => undefined);
  }
}

export async function fleetSnapshot(ctx: EngineContext, history: FleetHistory) {
  type FleetRunner = { runnerId: string; name: string; labels: string[]; os: string; arch: string; jobId: string | null; jobName: string | null; state: string; since: string | null };
  const runners: FleetRunner[] = [];
  // Idle: registered and waiting in a lease long poll on this server (oldest first).
  for (const w of ctx.waiters.list().slice(0, LIST_MAX)) {
    const r = await ctx.store.getRunner(w.runnerId);
    runners.push({
      runnerId: w.runnerId, name: r?.name ?? w.runnerId, labels: w.caps.labels, os: w.caps.os, arch: w.caps.arch,
      jobId: null, jobName: null, state: "idle", since: r ? new Date(r.createdAt).toISOString() : null,
    });
  }
  for (const state of LIVE) {
    for (const j of await ctx.store.listJobs({ state, limit: LIST_MAX })) {
      const a = await ctx.store.getAttempt(j.id, j.attempt);
      const r = a?.runnerId ? await ctx.store.getRunner(a.runnerId) : undefined;
      if (!a || !r) continue;
      runners.push({
        runnerId: r.id, name: r.name, labels: r.capabilities.labels, os: r.capabilities.os, arch: r.capabilities.arch,
        jobId: j.id, jobName: j.name, state: a.state, since: a.startedAt === null ? null : new Date(a.startedAt).toISOString(),
      });
    }
  }
  const unschedulable = (await ctx.store.listJobs({ state: "queued", limit: LIST_MAX })).filter((j) => j.unschedulable !== null)
    .map((j) => ({ jobId: j.id, name: j.name, reason: j.unschedulable, labels: j.spec.runsOn.labels }));
  return {
    pools: ctx.capacity.pools, runners, demand: (await demand(ctx)).demand, unschedulable,
    counts: Object.fromEntries((await ctx.store.countJobsByState()).map((c) => [c.state, c.count])),
    history: history.samples,
  };
}

export type FleetSnapshot = Awaited<ReturnType<typeof fleetSnapshot>>;
