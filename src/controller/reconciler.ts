/**
 * The reconcile loop: keeps the runners a provider runs in line with the server's demand.
 *
 * Three things wake it: a demand change (a long poll on `GET /v1/controller/demand` that the
 * server answers as soon as demand changes), a runner exit, and a short housekeeping tick
 * (runner state probes, backoff expiry). Reconciles never overlap: a wake-up during one marks
 * the loop dirty and it runs again. Decisions come from `planScaling`; this file only does I/O.
 */
import type { Logger } from "pino";
import { backoffMs } from "../base/backoff.ts";
import type { Clock } from "../base/clock.ts";
import { isDeltaError, type DeltaError } from "../base/errors.ts";
import type { ControlPlane } from "./control-plane.ts";
import type { ControllerMetrics } from "./metrics.ts";
import type { RunnerExit, RunnerProvider } from "./provider.ts";
import { requirementKey } from "./matching.ts";
import { RegistrationReserve } from "./registration-reserve.ts";
import { planScaling, type ScalingPlan } from "./scaling.ts";
import type { DemandEntry, Pool } from "./types.ts";

export interface ReconcilerSettings {
  pools: Pool[];
  maxRunners: number;
  idleGraceMs: number;
  demandWaitMs: number;
  tickMs: number;
  startupGraceMs: number;
  crashBackoffBaseMs: number;
  crashBackoffMaxMs: number;
  registrationTtlMs: number;
  serverRetryBaseMs: number;
  serverRetryMaxMs: number;
}

export interface ReconcilerDeps {
  provider: RunnerProvider;
  api: ControlPlane;
  clock: Clock;
  metrics: ControllerMetrics;
  logger?: Logger | undefined;
  random?: () => number;
}

interface PoolHealth {
  crashes: number;
  blockedUntilMs: number;
}

export class Reconciler {
  private readonly s: ReconcilerSettings;
  private readonly d: ReconcilerDeps;
  private readonly abort = new AbortController();
  private demand: DemandEntry[] | null = null;
  private readonly health = new Map<string, PoolHealth>();
  private dirty = false;
  private running: Promise<void> | null = null;
  private loops: Promise<unknown>[] = [];
  private capacityDeclared = false;
  /** False until the first demand arrives and while the control plane is unreachable: no launches, no drains. */
  private connected = false;
  private mintFailing = false;
  private lastUnschedulable = "";
  private readonly waiters = new Set<() => void>();
  /** Tokens minted ahead: a launch seldom waits for a mint. */
  private readonly reserve: RegistrationReserve;

  constructor(settings: ReconcilerSettings, deps: ReconcilerDeps) {
    this.s = settings;
    this.d = deps;
    this.reserve = new RegistrationReserve({
      api: deps.api, clock: deps.clock, ttlMs: settings.registrationTtlMs,
      // as many as the pool can have alive at once: one mint per that many launches
      ahead: (pool) => Math.min(pool.max, settings.maxRunners),
    });
    for (const p of settings.pools) this.health.set(p.name, { crashes: 0, blockedUntilMs: 0 });
  }

  /** Adopts and reaps, then starts the loops. */
  async start(): Promise<void> {
    const { adopted, reaped } = await this.d.provider.init();
    this.d.metrics.adopted.inc(adopted.length);
    this.d.metrics.countReaped(reaped);
    if (adopted.length > 0 || reaped.length > 0) this.d.logger?.info({ adopted: adopted.length, reaped }, "recovered runners of an earlier controller");
    this.d.provider.onExit((e) => this.onExit(e));
    this.d.metrics.watchRunners(() => ({ pools: this.s.pools.map((p) => p.name), runners: this.d.provider.list() }));
    this.loops = [this.demandLoop(), this.tickLoop()];
    this.trigger();
  }

  /** Stops the loops (runners keep running unless the caller drains or terminates them). */
  async stop(): Promise<void> {
    this.abort.abort(new Error("controller stopping"));
    await Promise.allSettled(this.loops);
    await this.running?.catch(() => {});
    this.reserve.clear();
  }

  /** Resolves after the next complete reconcile (for callers that want to observe its effect). */
  settled(): Promise<void> {
    return new Promise((resolve) => {
      this.waiters.add(resolve);
      this.trigger();
    });
  }

  trigger(): void {
    this.dirty = true;
    if (this.running || this.abort.signal.aborted) return;
    this.running = (async () => {
      while (this.dirty && !this.abort.signal.aborted) {
        this.dirty = false;
        const waiters = [...this.waiters];
        this.waiters.clear();
        try {
          await this.reconcileOnce();
        } catch (err) {
          this.d.logger?.error({ err }, "reconcile failed");
        }
        for (const w of waiters) w();
      }
      this.running = null;
      for (const w of this.waiters) w();
      this.waiters.clear();
    })();
  }

  private async reconcileOnce(): Promise<void> {
    const { provider, metrics, clock } = this.d;
    await provider.refresh();
    const now = clock.now();
    const runners = provider.list();
    const blockedUntilMs: Record<string, number> = {};
    for (const [name, h] of this.health) {
      blockedUntilMs[name] = h.blockedUntilMs;
      metrics.backoff.set({ pool: name }, Math.max(0, (h.blockedUntilMs - now) / 1000));
    }
    const plan = planScaling({
      nowMs: now, demand: this.demand ?? [], pools: this.s.pools, runners,
      policy: { maxRunners: this.s.maxRunners, idleGraceMs: this.s.idleGraceMs }, blockedUntilMs,
    });
    this.report(plan);
    const launches: Promise<void>[] = [];
    for (const dec of this.connected ? plan.decisions : []) {
      const pool = this.s.pools.find((p) => p.name === dec.pool);
      if (!pool) continue;
      if (dec.kind === "launch") {
        metrics.decisions.inc({ pool: pool.name, kind: "launch", reason: dec.reason }, dec.count);
        this.d.logger?.debug({ pool: pool.name, count: dec.count, reason: dec.reason }, "launching runners");
        launches.push(this.launch(pool, dec.count));
      } else {
        metrics.decisions.inc({ pool: pool.name, kind: "drain", reason: dec.reason });
        this.d.logger?.debug({ pool: pool.name, runner: dec.runnerId }, "draining a surplus idle runner");
        await provider.drain(dec.runnerId);
      }
    }
    await Promise.all(launches);
  }

  private async launch(pool: Pool, count: number): Promise<void> {
    const started = performance.now();
    let tokens: string[];
    try {
      tokens = await this.reserve.take(pool, count, this.abort.signal);
      this.mintFailing = false;
    } catch (err) {
      if (!this.abort.signal.aborted && !this.mintFailing) this.d.logger?.warn({ err: (err as Error).message, pool: pool.name }, "cannot mint registration tokens");
      this.mintFailing = true;
      return;
    }
    await Promise.all(tokens.map(async (registrationToken) => {
      try {
        await this.d.provider.launch({ pool, registrationToken, serverUrl: this.d.api.url });
        this.d.metrics.spawnSeconds.observe({ pool: pool.name }, (performance.now() - started) / 1000);
      } catch (err) {
        const logTail = isDeltaError(err) && typeof err.details?.logTail === "string" ? err.details.logTail : "";
        this.crashed(pool.name, `cannot start a runner: ${(err as Error).message}`, logTail);
      }
    }));
  }

  private onExit(e: RunnerExit): void {
    const pool = e.runner.pool;
    this.d.metrics.countReaped(e.reaped);
    if (e.reaped.length > 0) this.d.logger?.info({ runner: e.runner.id, reaped: e.reaped }, "reaped what a runner left behind");
    const failed = e.code !== 0 || e.signal !== null;
    // exit code 2 is the runner's "could not start" (e.g. registration failed), whenever it comes
    const startCrash = failed && !e.requested && !e.runner.everBusy && !e.runner.adopted && (e.code === 2 || e.lifetimeMs < this.s.startupGraceMs);
    const outcome = e.requested ? "killed" : startCrash ? "start_crash" : failed ? "failed" : "clean";
    this.d.metrics.exits.inc({ pool, outcome });
    if (startCrash) {
      const how = e.signal !== null ? `signal ${e.signal}` : `exit code ${e.code}`;
      this.crashed(pool, `runner ${e.runner.id} exited at start (${how}) after ${e.lifetimeMs} ms`, e.logTail);
      // its registration may have been refused (a server that lost the tokens it minted): the
      // pool's next launch mints afresh instead of handing out another held token
      this.reserve.clear(pool);
    } else {
      if (failed && !e.requested) this.d.logger?.warn({ runner: e.runner.id, code: e.code, signal: e.signal }, "runner ended abnormally");
      const h = this.health.get(pool);
      if (h && (e.runner.everBusy || !failed) && h.crashes > 0) {
        this.d.logger?.info({ pool }, "runners of this pool start again");
        h.crashes = 0;
        h.blockedUntilMs = 0;
      }
    }
    this.trigger();
  }

  /** One clear error per crash streak, then exponential backoff for the pool. */
  private crashed(poolName: string, message: string, logTail: string): void {
    const h = this.health.get(poolName);
    if (!h) return;
    const delay = backoffMs(h.crashes, this.s.crashBackoffBaseMs, this.s.crashBackoffMaxMs, this.d.random);
    h.crashes++;
    h.blockedUntilMs = this.d.clock.now() + delay;
    const fields = { pool: poolName, crashes: h.crashes, retryInMs: delay };
    if (h.crashes === 1) this.d.logger?.error({ ...fields, runnerLog: lastLines(logTail, 15) }, `${message}; the pool backs off before starting another`);
    else this.d.logger?.debug(fields, message);
  }

  private report(plan: ScalingPlan): void {
    const total = plan.unschedulable.reduce((n, u) => n + u.queued, 0);
    this.d.metrics.unschedulable.set(total);
    this.d.metrics.waiting.set(plan.waiting);
    const key = plan.unschedulable.map((u) => requirementKey(u.requirements)).sort().join(" ");
    if (key !== this.lastUnschedulable) {
      this.lastUnschedulable = key;
      if (total > 0) this.d.logger?.warn({ requirements: plan.unschedulable }, "queued jobs that no pool can serve");
    }
  }

  private async demandLoop(): Promise<void> {
    const signal = this.abort.signal;
    let since: number | null = null;
    let failures = 0;
    while (!signal.aborted) {
      try {
        if (!this.capacityDeclared) {
          try {
            await this.d.api.putCapacity(this.s.pools, signal);
          } catch (err) {
            // a control plane without capacity support still serves demand: go on without it
            if (!isDeltaError(err, "E_NOT_FOUND") && (err as DeltaError).details?.status !== 404) throw err;
            this.d.logger?.warn("the control plane does not take declared capacity; unschedulable jobs will not be flagged by it");
          }
          this.capacityDeclared = true;
        }
        const snap = await this.d.api.demand(since, this.s.demandWaitMs, signal);
        if (failures > 0) this.d.logger?.info("control plane reachable again");
        failures = 0;
        this.connected = true;
        const changed = snap.version === null || snap.version !== since;
        since = snap.version;
        this.demand = snap.demand;
        if (changed) this.trigger();
        // a server without versions cannot long-poll: poll at the tick rate instead of spinning
        if (snap.version === null) await this.d.clock.sleep(this.s.tickMs, signal);
      } catch (err) {
        if (signal.aborted) return;
        if (failures === 0) this.d.logger?.warn({ err: (err as Error).message }, "cannot reach the control plane; retrying");
        since = null;
        this.capacityDeclared = false;
        this.connected = false;
        // The server may come back without the tokens it minted (restored state, a power cut with
        // --durability normal, another server at the address): a held one would crash its runner at start.
        this.reserve.clear();
        await this.d.clock.sleep(backoffMs(failures++, this.s.serverRetryBaseMs, this.s.serverRetryMaxMs, this.d.random), signal).catch(() => {});
      }
    }
  }

  private async tickLoop(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      await this.d.clock.sleep(this.s.tickMs, signal).catch(() => {});
      if (!signal.aborted) this.trigger();
    }
  }
}

function lastLines(text: string, n: number): string {
  return text.trimEnd().split("\n").slice(-n).join("\n");
}
