/**
 * `startController(options, deps)`: the runner controller in-process (for `deltaci controller`,
 * `deltaci up` and `deltaci run`). Runners are local processes unless `deps.provider` says otherwise.
 */
import type { Logger } from "pino";
import { systemClock, type Clock } from "../base/clock.ts";
import { controllerDefaults } from "../config/controller-config.ts";
import { defaults } from "../config/defaults.ts";
import { HttpControlPlane, type ControlPlane } from "./control-plane.ts";
import { HostProvider } from "./host-provider.ts";
import { LocalProvider, workDirReaper } from "./local-provider.ts";
import { ControllerMetrics, serveMetrics } from "./metrics.ts";
import type { RunnerProvider, SlotReaper } from "./provider.ts";
import { Reconciler } from "./reconciler.ts";
import type { Pool } from "./types.ts";

export type { Pool } from "./types.ts";
export type { RunnerProvider, SlotReaper, SlotRef } from "./provider.ts";

type Tunables = { -readonly [K in keyof typeof controllerDefaults]: (typeof controllerDefaults)[K] extends string ? string : number };

export interface ControllerOptions extends Partial<Omit<Tunables, "maxRunners" | "minIdle" | "workRoot">> {
  serverUrl: string;
  controllerToken: string;
  pools: Pool[];
  maxRunners: number;
  workRoot: string;
  /** `/metrics` listener, or none. */
  metricsListen?: { host: string; port: number } | null;
  /** Extra arguments passed to every runner. */
  runnerArgs?: string[];
  /** First runner slot index (default 0); controllers sharing a host need disjoint ranges. */
  slotBase?: number;
  /** `session` (default): runners are sessions in a warm runner host; `process`: a process per runner. */
  runnerMode?: RunnerMode;
  /** Runner hosts retire after this many sessions (session mode). */
  hostMaxSessions?: number;
  /** Runner hosts retire after this long (session mode). */
  hostMaxAgeMs?: number;
  /** Extra arguments for every runner host (session mode). */
  hostArgs?: string[];
}

export const RUNNER_MODES = ["session", "process"] as const;
export type RunnerMode = (typeof RUNNER_MODES)[number];

export interface ControllerDeps {
  /** Removes a dead runner's leftovers; default: only its work dir (the CLI passes the sandbox's reaper). */
  reaper?: SlotReaper;
  /** How to start `deltaci` (required unless `provider` is given). */
  command?: { command: string; args: string[] };
  /** How to start `deltaci` for a runner host (session mode); default `command`. */
  hostCommand?: { command: string; args: string[] };
  provider?: RunnerProvider;
  api?: ControlPlane;
  clock?: Clock;
  logger?: Logger;
  metrics?: ControllerMetrics;
}

export interface StopOptions {
  /** `keep` (default): runners go on and a new controller adopts them; `drain`: idle ones exit, busy ones finish; `terminate`: kill all. */
  runners?: "keep" | "drain" | "terminate";
  /** How long to wait for runners to exit with `drain` before killing the rest. */
  timeoutMs?: number;
}

export interface RunningController {
  readonly metrics: ControllerMetrics;
  readonly metricsUrl: string | null;
  readonly provider: RunnerProvider;
  /** Resolves after the next complete reconcile. */
  settled(): Promise<void>;
  stop(opts?: StopOptions): Promise<void>;
}

export async function startController(opts: ControllerOptions, deps: ControllerDeps = {}): Promise<RunningController> {
  const t = { ...controllerDefaults, ...stripUndefined(opts) };
  const clock = deps.clock ?? systemClock;
  const metrics = deps.metrics ?? new ControllerMetrics();
  const api = deps.api ?? new HttpControlPlane(opts.serverUrl, opts.controllerToken, { timeoutMs: t.requestTimeoutMs });
  if (!deps.provider && !deps.command) throw new Error("startController: deps.command or deps.provider is required");
  const command = deps.command as { command: string; args: string[] };
  const reaper = deps.reaper ?? workDirReaper;
  const provider =
    deps.provider ??
    ((opts.runnerMode ?? "session") === "session"
      ? new HostProvider({
        workRoot: opts.workRoot, command: deps.hostCommand ?? command, slotBase: opts.slotBase ?? 0, slotsPerHost: opts.maxRunners, runnerIdleTimeoutMs: t.runnerIdleTimeoutMs,
        maxSessions: opts.hostMaxSessions ?? defaults.hostMaxSessions, maxAgeMs: opts.hostMaxAgeMs ?? defaults.hostMaxAgeMs,
        startTimeoutMs: defaults.hostStartTimeoutMs, drainTimeoutMs: t.drainTimeoutMs, reaper, clock, logger: deps.logger, hostArgs: opts.hostArgs ?? [],
      })
      : new LocalProvider({
        workRoot: opts.workRoot, command, runnerIdleTimeoutMs: t.runnerIdleTimeoutMs,
        drainTimeoutMs: t.drainTimeoutMs, slotBase: opts.slotBase ?? 0, reaper, clock, logger: deps.logger, runnerArgs: opts.runnerArgs ?? [],
      }));
  const reconciler = new Reconciler(
    {
      pools: opts.pools, maxRunners: opts.maxRunners, idleGraceMs: t.idleGraceMs, demandWaitMs: t.demandWaitMs, tickMs: t.tickMs,
      startupGraceMs: t.startupGraceMs, crashBackoffBaseMs: t.crashBackoffBaseMs, crashBackoffMaxMs: t.crashBackoffMaxMs,
      registrationTtlMs: t.registrationTtlMs, serverRetryBaseMs: t.serverRetryBaseMs, serverRetryMaxMs: t.serverRetryMaxMs,
    },
    { provider, api, clock, metrics, logger: deps.logger },
  );
  const metricsServer = opts.metricsListen ? await serveMetrics(metrics.registry, opts.metricsListen.host, opts.metricsListen.port) : null;
  try {
    await reconciler.start();
  } catch (err) {
    await metricsServer?.close();
    throw err;
  }
  let stopped: Promise<void> | null = null;
  return {
    metrics,
    metricsUrl: metricsServer?.url ?? null,
    provider,
    settled: () => reconciler.settled(),
    stop: (so = {}) =>
      (stopped ??= (async () => {
        await reconciler.stop();
        if (so.runners === "drain" || so.runners === "terminate") {
          await stopRunners(provider, clock, so.runners, so.timeoutMs ?? t.drainTimeoutMs, t.tickMs);
          if (provider.reapFreeSlots) metrics.countReaped(await provider.reapFreeSlots().catch(() => []));
        }
        await provider.close();
        if (!deps.api) await api.close();
        await metricsServer?.close();
      })()),
  };
}

async function stopRunners(provider: RunnerProvider, clock: Clock, how: "drain" | "terminate", timeoutMs: number, tickMs: number): Promise<void> {
  const deadline = clock.now() + timeoutMs;
  for (;;) {
    await provider.refresh();
    const left = provider.list();
    if (left.length === 0) return;
    const kill = how === "terminate" || clock.now() >= deadline;
    for (const r of left) {
      if (kill) await provider.terminate(r.id);
      else if (r.state !== "busy" && r.state !== "draining") await provider.drain(r.id);
    }
    await provider.refresh();
    if (provider.list().length === 0) return; // gone already (in-process runners end within terminate): no tick's sleep
    if (clock.now() >= deadline + timeoutMs) return; // killed and still there: give up waiting, the next controller reaps
    await clock.sleep(Math.min(tickMs, 50));
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
