/**
 * A RunnerProvider whose runner host lives in this process, for `deltaci run`: the same
 * RunnerHost (src/host/) that `deltaci runner-host` runs, without a process or a socket. The
 * controller still decides when to start runners and mints their registration tokens; each
 * runner is a session with its own slot (uid range, cgroup, work dir), protocol client and
 * sandbox, and its state comes from the host's typed events.
 */
import { chmod, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { timerClock, type Clock } from "../../base/clock.ts";
import { DELTACI_VERSION } from "../../config/defaults.ts";
import { userCacheDir } from "../../config/paths.ts";
import { defaultRunnerSettings } from "../../config/runner-config.ts";
import type { InitResult, LaunchRequest, RunnerExit, RunnerProvider, RunnerRecord } from "../../controller/provider.ts";
import { applySessionState } from "../../controller/host-provider.ts";
import { RunnerHost } from "../../host/runner-host.ts";
import type { HostEvent } from "../../protocol/host-protocol.ts";
import type { RunnerLogger } from "../../runner/ports.ts";
import { slotInfo } from "../../sandbox/slots.ts";
import { warmSpec } from "../../runner/warm-shape.ts";
import type { SandboxFactory, SlotInfo } from "../../sandbox/types.ts";

export interface InProcessProviderOptions {
  workRoot: string;
  slotBase: number;
  maxSlots: number;
  sandboxFactory: SandboxFactory;
  clock: Clock;
  logger: RunnerLogger;
  idleTimeoutMs: number;
  /** Sessions prewarm their slot's sandbox (the shape in `workRoot`/warm-shape.json, else the defaults). */
  prewarm?: boolean;
  /** Stop prewarming once this many different jobs were leased (`deltaci run` knows its jobs: a sandbox built after the last one is only torn down). */
  prewarmJobs?: number;
}

interface Live {
  record: RunnerRecord;
  requested: boolean;
}

/**
 * The runners' clock: like the system clock, but its timers never keep the process alive, so a
 * runner's leftover timer (a lease deadline not cleared) cannot delay `deltaci run`'s exit.
 * Everything the run waits for is awaited by the CLI, which holds the process open meanwhile.
 */
export function unrefClock(base: Clock): Clock {
  return timerClock({ now: () => base.now(), unref: true });
}

export class InProcessProvider implements RunnerProvider {
  private readonly o: InProcessProviderOptions;
  private readonly host: RunnerHost;
  private readonly live = new Map<string, Live>();
  private readonly listeners: Array<(e: RunnerExit) => void> = [];
  private seq = 0;
  private readonly leasedJobs = new Set<string>();
  private readonly slots: SlotInfo[];
  private initialized: Promise<InitResult> | null = null;

  constructor(opts: InProcessProviderOptions) {
    this.o = opts;
    const slotsDir = join(opts.workRoot, "slots");
    const { serverUrl: _url, labels: _labels, ...settings } = defaultRunnerSettings("http://unused", {
      labels: [], cacheDir: opts.workRoot, idleTimeoutMs: opts.idleTimeoutMs, prewarm: opts.prewarm === true,
    });
    this.slots = Array.from({ length: opts.maxSlots }, (_, i) => slotInfo(opts.slotBase + i, slotsDir));
    this.host = new RunnerHost({
      slots: this.slots,
      // The toolchain probe's cache outlives the run (its workRoot is fresh): a warm start costs a few stats.
      sandboxFactory: opts.sandboxFactory, settings: { ...settings, version: DELTACI_VERSION, toolchainsCache: join(userCacheDir(), "toolchains.json") }, clock: unrefClock(opts.clock),
      logger: opts.logger, maxSessions: 0, maxAgeMs: 0,
    });
    this.host.onEvent((e) => this.onHostEvent(e));
  }

  /** Once: `deltaci run` calls it (see `prewarmFirst`) before its controller starts, which calls it again. */
  init(): Promise<InitResult> {
    this.initialized ??= (async () => {
      // Sandboxed steps run as an unprivileged uid that must traverse down to its slot's work dir.
      const slots = join(this.o.workRoot, "slots");
      await mkdir(slots, { recursive: true, mode: 0o711 });
      await chmod(slots, 0o711);
      return { adopted: [], reaped: await this.host.init() };
    })();
    return this.initialized;
  }

  /**
   * Builds the sandboxes of the first `n` sessions (they take the slots in order) now, before
   * any session exists: `deltaci run` calls it while its server starts. A session then finds its
   * sandbox built or being built (the factory's warm pool). Never rejects.
   */
  async prewarmFirst(n: number): Promise<void> {
    if (this.o.prewarm !== true) return;
    const since = this.o.clock.now();
    await this.init().catch(() => {}); // a reap after the prewarm would dispose of it; a failure shows in the controller's init
    const reapedMs = this.o.clock.now() - since;
    await Promise.all(this.slots.slice(0, n).map(async (slot) => this.o.sandboxFactory.prewarm(await warmSpec(join(this.o.workRoot, "warm-shape.json"), slot))));
    this.o.logger.info({ slots: n, reapedMs, ms: this.o.clock.now() - since }, "first sandboxes prewarmed");
  }

  async launch(req: LaunchRequest): Promise<RunnerRecord> {
    const now = this.o.clock.now();
    const id = `inproc-${++this.seq}`;
    const view = this.host.launch({ id, registrationToken: req.registrationToken, serverUrl: req.serverUrl, labels: req.pool.labels });
    const record: RunnerRecord = { id, pool: req.pool.name, state: "starting", sinceMs: now, launchedAtMs: now, adopted: false, everBusy: false, handle: `slot-${view.slot}` };
    this.live.set(id, { record, requested: false });
    return { ...record };
  }

  async refresh(): Promise<void> {}

  list(): RunnerRecord[] {
    return [...this.live.values()].map((l) => ({ ...l.record }));
  }

  async drain(id: string): Promise<void> {
    const l = this.live.get(id);
    if (!l) return;
    l.requested = true;
    l.record.state = "draining";
    this.host.drain(id);
  }

  async terminate(id: string): Promise<void> {
    const l = this.live.get(id);
    if (!l) return;
    l.requested = true;
    await this.host.terminate(id);
  }

  onExit(listener: (exit: RunnerExit) => void): void {
    this.listeners.push(listener);
  }

  /** Runners in this process cannot outlive it: stop them all and reap their slots. */
  async close(): Promise<void> {
    await this.host.close();
  }

  private onHostEvent(e: HostEvent): void {
    if (e.type !== "session_state" && e.type !== "session_exited") return;
    const l = this.live.get(e.id);
    if (!l) return;
    if (e.type === "session_state") {
      applySessionState(l.record, e);
      if (e.jobId !== null) this.leasedJobs.add(e.jobId);
      if (this.o.prewarmJobs !== undefined && this.leasedJobs.size >= this.o.prewarmJobs) this.host.stopPrewarming();
      return;
    }
    this.live.delete(e.id);
    const exit: RunnerExit = { runner: { ...l.record }, code: e.code, signal: null, lifetimeMs: e.lifetimeMs, requested: l.requested, logTail: e.reason, reaped: e.reaped };
    for (const fn of this.listeners) fn(exit);
  }
}
