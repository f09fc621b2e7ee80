/**
 * A RunnerProvider whose runners live in this process (`runRunner` from src/runner), for
 * `deltaci run`: the controller still decides when to start runners and mints their
 * registration tokens, but a runner costs no process start (node + module load, the largest
 * part of a one-job run's wall time). Each runner has its own slot (uid range, cgroup, work
 * dir) and its own protocol client; they share one sandbox factory. A runner is idle once it
 * registered and busy once it leased (read from its log messages, like the local provider).
 */
import { chmod, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { timerClock, type Clock } from "../../base/clock.ts";
import { HttpClient } from "../../client/http.ts";
import { RetryPolicy } from "../../client/retry-policy.ts";
import { RunnerClient } from "../../client/runner-client.ts";
import { defaults } from "../../config/defaults.ts";
import type { InitResult, LaunchRequest, RunnerExit, RunnerProvider, RunnerRecord } from "../../controller/provider.ts";
import type { RunnerState } from "../../controller/types.ts";
import type { RunnerLogger } from "../../runner/ports.ts";
import { runRunner } from "../../runner/runner.ts";
import { slotInfo } from "../../sandbox/slots.ts";
import type { SandboxFactory, SlotInfo } from "../../sandbox/types.ts";

export interface InProcessProviderOptions {
  workRoot: string;
  slotBase: number;
  maxSlots: number;
  sandboxFactory: SandboxFactory;
  clock: Clock;
  logger: RunnerLogger;
  idleTimeoutMs: number;
  /**
   * Runners prewarm a sandbox while they register and wait (runRunner's `prewarm`: the shape in
   * `workRoot`/warm-shape.json, else the defaults). The factory's owner closes it after `close()`.
   */
  prewarm?: boolean;
}

interface Live {
  record: RunnerRecord;
  slot: SlotInfo;
  stop: AbortController;
  requested: boolean;
  done: Promise<void>;
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
  private readonly live = new Map<string, Live>();
  private readonly listeners: Array<(e: RunnerExit) => void> = [];
  private seq = 0;

  constructor(opts: InProcessProviderOptions) {
    this.o = opts;
  }

  async init(): Promise<InitResult> {
    // Sandboxed steps run as an unprivileged uid that must traverse down to its slot's work dir.
    const slots = join(this.o.workRoot, "slots");
    await mkdir(slots, { recursive: true, mode: 0o711 });
    await chmod(slots, 0o711);
    return { adopted: [], reaped: [] };
  }

  private freeSlot(): number {
    const used = new Set([...this.live.values()].map((l) => l.slot.index));
    for (let i = this.o.slotBase; i < this.o.slotBase + this.o.maxSlots; i++) if (!used.has(i)) return i;
    throw new Error(`no free runner slot (at most ${this.o.maxSlots} in-process runners)`);
  }

  async launch(req: LaunchRequest): Promise<RunnerRecord> {
    const now = this.o.clock.now();
    const index = this.freeSlot();
    const slot = slotInfo(index, join(this.o.workRoot, "slots"));
    const record: RunnerRecord = {
      id: `inproc-${index}-${++this.seq}`, pool: req.pool.name, state: "starting", sinceMs: now, launchedAtMs: now,
      adopted: false, everBusy: false, handle: `slot-${index}`,
    };
    const setState = (state: RunnerState) => {
      if (record.state === state || record.state === "draining") return;
      record.state = state;
      record.sinceMs = this.o.clock.now();
      if (state === "busy") record.everBusy = true;
    };
    const base = this.o.logger;
    const logger: RunnerLogger = {
      info: (f, msg) => {
        if (msg === "registered") setState("idle");
        else if (msg === "leased") setState("busy");
        base.info({ runner: record.id, ...f }, msg);
      },
      warn: (f, msg) => base.warn({ runner: record.id, ...f }, msg),
      error: (f, msg) => base.error({ runner: record.id, ...f }, msg),
    };
    const stop = new AbortController();
    const http = new HttpClient(req.serverUrl, { timeoutMs: defaults.requestTimeoutMs });
    const clock = unrefClock(this.o.clock);
    const client = new RunnerClient({ http, retry: new RetryPolicy({ clock }), requestTimeoutMs: defaults.requestTimeoutMs });
    const live: Live = { record, slot, stop, requested: false, done: Promise.resolve() };
    live.done = (async () => {
      let code: number | null = null;
      try {
        const res = await runRunner(
          {
            registrationToken: req.registrationToken, name: record.id, version: "0.1.0", labels: req.pool.labels, slot,
            cacheDir: this.o.workRoot, prewarm: this.o.prewarm === true, idleTimeoutMs: this.o.idleTimeoutMs, leaseWaitMs: defaults.leaseWaitDefaultMs, registerDeadlineMs: 60_000,
            timings: {
              flushIntervalMs: defaults.logFlushIntervalMs, flushBytes: defaults.logFlushBytes, chunkBytes: defaults.logChunkLimitBytes,
              cancelGraceMs: defaults.cancelGraceMs, tailUploadMs: 10_000, disposeMs: 60_000,
            },
          },
          { client, sandboxFactory: this.o.sandboxFactory, clock, logger, signal: stop.signal },
        );
        code = res.code;
      } catch (err) {
        base.error({ runner: record.id, err: String(err) }, "in-process runner failed");
        code = 2;
      } finally {
        await http.destroy().catch(() => {});
      }
      const reaped = await this.o.sandboxFactory.reapSlot(slot).catch(() => []);
      this.live.delete(record.id);
      const exit: RunnerExit = { runner: record, code, signal: null, lifetimeMs: this.o.clock.now() - now, requested: live.requested, logTail: "", reaped };
      for (const l of this.listeners) l(exit);
    })();
    this.live.set(record.id, live);
    return record;
  }

  async refresh(): Promise<void> {}

  list(): RunnerRecord[] {
    return [...this.live.values()].map((l) => l.record);
  }

  /** An idle runner stops now; a busy one finishes its job (runners take one job, then exit anyway). */
  async drain(id: string): Promise<void> {
    const l = this.live.get(id);
    if (!l) return;
    l.requested = true;
    if (l.record.state !== "busy") l.stop.abort(new Error("drained"));
    l.record.state = "draining";
  }

  async terminate(id: string): Promise<void> {
    const l = this.live.get(id);
    if (!l) return;
    l.requested = true;
    l.stop.abort(new Error("terminated"));
    await l.done;
  }

  onExit(listener: (exit: RunnerExit) => void): void {
    this.listeners.push(listener);
  }

  /** Runners in this process cannot outlive it: stop them all. */
  async close(): Promise<void> {
    await Promise.all([...this.live.keys()].map((id) => this.terminate(id)));
  }
}
