import { test } from "node:test";
import assert from "node:assert/strict";
import { timerClock } from "../base/clock.ts";
import type { ControlPlane, DemandSnapshot } from "./control-plane.ts";
import { ControllerMetrics } from "./metrics.ts";
import type { LaunchRequest, RunnerExit, RunnerProvider, RunnerRecord } from "./provider.ts";
import { Reconciler } from "./reconciler.ts";
import type { Pool } from "./types.ts";

const pool: Pool = { name: "default", os: "linux", arch: "x64", labels: [], resources: { cpus: 2, memoryMiB: 2048, diskMiB: 4096 }, max: 4, minIdle: 0, isolation: "process" };
const oneQueued = [{ requirements: { os: null, arch: null, labels: [], resources: { cpus: 1, memoryMiB: 512, diskMiB: 1024 } }, queued: 1, running: 0 }];

/** A control plane that can go down and come back without its state (its tokens), as a server restored from an older state does. */
class FakeControlPlane implements ControlPlane {
  readonly url = "http://127.0.0.1:1";
  up = true;
  /** Tokens the server would take for a `register`. */
  readonly known = new Set<string>();
  demandCalls = 0;
  demandFailures = 0;
  private n = 0;
  private readonly waiters = new Set<() => void>();

  /** Resolves once `pred` holds (checked at each demand poll). */
  until(pred: () => boolean): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (!pred()) return;
        this.waiters.delete(check);
        resolve();
      };
      this.waiters.add(check);
      check();
    });
  }

  private polled(): void {
    for (const w of [...this.waiters]) w();
  }

  async demand(): Promise<DemandSnapshot> {
    await new Promise((r) => setTimeout(r, 5));
    this.demandCalls++;
    if (!this.up) {
      this.demandFailures++;
      this.polled();
      throw new Error("connect ECONNREFUSED");
    }
    this.polled();
    return { version: null, demand: oneQueued };
  }

  registrations(count: number): Promise<string[]> {
    if (!this.up) return Promise.reject(new Error("connect ECONNREFUSED"));
    const tokens = Array.from({ length: count }, () => `dci_reg_${++this.n}`);
    for (const t of tokens) this.known.add(t);
    return Promise.resolve(tokens);
  }

  putCapacity(): Promise<void> {
    return this.up ? Promise.resolve() : Promise.reject(new Error("connect ECONNREFUSED"));
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Runners that take their token at launch: an unknown one makes the runner exit at start (code 2), as `register` refuses it. */
class FakeProvider implements RunnerProvider {
  readonly launches: Array<{ token: string; known: boolean }> = [];
  private readonly runners = new Map<string, RunnerRecord>();
  private listener: ((e: RunnerExit) => void) | null = null;
  constructor(private readonly api: FakeControlPlane) {}

  init() {
    return Promise.resolve({ adopted: [], reaped: [] });
  }

  launch(req: LaunchRequest): Promise<RunnerRecord> {
    const known = this.api.known.delete(req.registrationToken);
    this.launches.push({ token: req.registrationToken, known });
    const r: RunnerRecord = { id: `r${this.launches.length}`, pool: req.pool.name, state: known ? "idle" : "starting", sinceMs: Date.now(), launchedAtMs: Date.now(), adopted: false, everBusy: false, handle: "" };
    this.runners.set(r.id, r);
    if (!known) setImmediate(() => this.exit(r.id, 2));
    return Promise.resolve(r);
  }

  /** The runner `id` exits with `code` (as after its job when 0). */
  exit(id: string, code: number): void {
    const r = this.runners.get(id);
    if (!r) return;
    this.runners.delete(id);
    if (code === 0) r.everBusy = true;
    this.listener?.({ runner: r, code, signal: null, lifetimeMs: 10, requested: false, logTail: code === 2 ? "registration token is unknown, used or expired" : "", reaped: [] });
  }

  refresh() {
    return Promise.resolve();
  }

  list() {
    return [...this.runners.values()];
  }

  drain(id: string) {
    this.exit(id, 0);
    return Promise.resolve();
  }

  terminate(id: string) {
    this.exit(id, 0);
    return Promise.resolve();
  }

  onExit(listener: (e: RunnerExit) => void) {
    this.listener = listener;
  }

  close() {
    return Promise.resolve();
  }
}

/** A started reconciler of one pool over the fakes; a pool whose runner crashed at start waits `crashBackoffMs`. */
async function started(crashBackoffMs: number): Promise<{ api: FakeControlPlane; provider: FakeProvider; reconciler: Reconciler }> {
  const api = new FakeControlPlane();
  const provider = new FakeProvider(api);
  const reconciler = new Reconciler(
    {
      pools: [pool], maxRunners: 4, idleGraceMs: 60_000, demandWaitMs: 1000, tickMs: 20, startupGraceMs: 60_000,
      crashBackoffBaseMs: crashBackoffMs, crashBackoffMaxMs: crashBackoffMs, registrationTtlMs: 10 * 60_000, serverRetryBaseMs: 5, serverRetryMaxMs: 10,
    },
    { provider, api, clock: timerClock(), metrics: new ControllerMetrics(), random: () => 0.5 },
  );
  await reconciler.start();
  return { api, provider, reconciler };
}

void test("reconciler: after the control plane was unreachable, a launch gets a token minted since, not one held from before", async () => {
  const { api, provider, reconciler } = await started(60_000);
  try {
    await api.until(() => provider.launches.length === 1);
    assert.equal(provider.launches[0]?.known, true);
    // The server goes away and comes back without the tokens it minted (a restore, a power cut
    // with --durability normal, a new server at the same address).
    api.up = false;
    await api.until(() => api.demandFailures > 0);
    api.known.clear();
    api.up = true;
    const before = api.demandCalls;
    await api.until(() => api.demandCalls > before);
    provider.exit("r1", 0); // its job done: the queued job wants a runner again
    await api.until(() => provider.launches.length === 2);
    assert.equal(provider.launches[1]?.known, true, "the launch after the outage got a token the server knows (else it crashes at start and its pool backs off)");
  } finally {
    await reconciler.stop();
  }
});

void test("reconciler: a runner that exits at start drops its pool's held tokens, so the next launch gets one minted since", async () => {
  const { api, provider, reconciler } = await started(10);
  try {
    await api.until(() => provider.launches.length === 1);
    assert.equal(provider.launches[0]?.known, true);
    // The server loses the tokens it minted while the controller still reaches it (no failed
    // poll tells the controller): the next launch's held token is refused at its register.
    api.known.clear();
    provider.exit("r1", 0);
    await api.until(() => provider.launches.length >= 3);
    assert.equal(provider.launches[1]?.known, false, "the launch after the loss took a held token");
    assert.equal(provider.launches[2]?.known, true, "after that runner's start crash, the next launch got a freshly minted token, not another held one");
  } finally {
    await reconciler.stop();
  }
});
