/**
 * Runners as sessions in runner hosts (`--runner-mode session`, the default): one warm host
 * process per isolation backend serves every runner of this controller, so a runner costs no
 * process start. A runner (RunnerRecord) is one session; its state comes from the host's typed
 * events. Each host owns a range of `slotsPerHost` slots for its life (range r: slots
 * slotBase + r*slotsPerHost …), so a retiring host and its successor never share a slot.
 *
 * Recycling: a host retires after `maxSessions` sessions or `maxAgeMs`; its successor is started
 * ahead (when the host is one host's worth of sessions, or a lead time, short of its limit) and
 * takes every launch from the moment it answers; then the old host is told to retire and exits
 * once its busy sessions ended. A host that dies (kill -9) has its sessions reported as exited
 * and its slots reaped before its range is used again; their jobs' leases expire and are retried.
 * A restarted controller adopts live hosts from `<workRoot>/controller/host-<range>/state.json`,
 * and reaps the slots of dead ones.
 */
import { mkdir, readdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Logger } from "pino";
import { within, type Clock } from "../base/clock.ts";
import { DeltaError } from "../base/errors.ts";
import type { HostEvent } from "../protocol/host-protocol.ts";
import { HostProcess, type HostExit, type HostState } from "./host-process.ts";
import { killProcessesUnder } from "./proc.ts";
import type { InitResult, LaunchRequest, RunnerExit, RunnerProvider, RunnerRecord, SlotReaper, SlotRef } from "./provider.ts";
import type { PoolIsolation } from "./types.ts";

export interface HostProviderOptions {
  workRoot: string;
  /** How to start the CLI (`deltaci`); `runner-host …` is appended. */
  command: { command: string; args: string[] };
  slotBase: number;
  /** Slots of one host: the most sessions it runs at once (the controller's max runners). */
  slotsPerHost: number;
  runnerIdleTimeoutMs: number;
  maxSessions: number;
  maxAgeMs: number;
  startTimeoutMs: number;
  /** Bound on waiting for a terminated session's end, and for hosts to exit at stop. */
  drainTimeoutMs: number;
  reaper: SlotReaper;
  clock: Clock;
  logger?: Logger | undefined;
  /** Extra `deltaci runner-host` arguments (e.g. --image-roots, --no-prewarm). */
  hostArgs?: readonly string[];
}

interface Live {
  record: RunnerRecord;
  host: HostProcess;
  requested: boolean;
  ended: Promise<void>;
  end: () => void;
}

export class HostProvider implements RunnerProvider {
  private readonly o: HostProviderOptions;
  private readonly root: string;
  private readonly hosts = new Set<HostProcess>();
  /** Per host: resolves once its exit was handled (slots reaped, state removed, sessions reported). */
  private readonly handled = new Map<HostProcess, Promise<void>>();
  /** Host starts in progress, per isolation (one at a time). */
  private readonly starting = new Map<PoolIsolation, Promise<HostProcess>>();
  /** Ranges held by live hosts, starting hosts and hosts being reaped. */
  private readonly ranges = new Set<number>();
  private readonly sessions = new Map<string, Live>();
  private readonly listeners: Array<(e: RunnerExit) => void> = [];
  private seq = 0;
  private closed = false;
  /** Set once the controller stops its runners: no successor host is started any more. */
  private stopping = false;

  constructor(opts: HostProviderOptions) {
    this.o = opts;
    this.root = resolve(opts.workRoot);
  }

  async init(): Promise<InitResult> {
    await mkdir(this.root, { recursive: true, mode: 0o711 });
    const dir = join(this.root, "controller");
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const adopted: RunnerRecord[] = [];
    const reaped: string[] = [];
    for (const name of await readdir(dir)) {
      const m = /^host-(\d+)$/.exec(name);
      if (!m) continue;
      const range = Number(m[1]);
      const { host, state } = await HostProcess.adopt(join(dir, name), this.o.clock, this.o.startTimeoutMs);
      if (host === null) {
        if (state) {
          reaped.push(...(await this.reapRange(state)));
          this.o.logger?.info({ host: state.hostId, range }, "reaped the slots of a runner host that died");
        }
        continue;
      }
      this.ranges.add(range);
      this.watch(host);
      for (const s of host.helloInfo?.sessions ?? []) {
        const live = this.track(host, { id: s.id, pool: poolOf(s.id), state: s.state, sinceMs: s.sinceMs, launchedAtMs: s.launchedAtMs, adopted: true, everBusy: s.everBusy, handle: `${host.state.hostId}/slot-${s.slot}` });
        adopted.push({ ...live.record });
      }
      this.o.logger?.info({ host: host.state.hostId, pid: host.state.pid, sessions: host.helloInfo?.sessions.length ?? 0 }, "adopted a running runner host");
    }
    return { adopted, reaped };
  }

  async launch(req: LaunchRequest): Promise<RunnerRecord> {
    if (this.closed) throw new DeltaError("E_CLOSED", "provider closed");
    const host = await this.activeHost(req.pool.isolation);
    const now = this.o.clock.now();
    const id = `${req.pool.name}.${host.state.range}-${(++this.seq).toString(36)}-${now.toString(36)}`;
    const live = this.track(host, { id, pool: req.pool.name, state: "starting", sinceMs: now, launchedAtMs: now, adopted: false, everBusy: false, handle: host.state.hostId });
    host.launched++;
    host.send({ op: "launch", id, registrationToken: req.registrationToken, serverUrl: req.serverUrl, labels: req.pool.labels });
    this.successorIfDue(host);
    return { ...live.record };
  }

  async refresh(): Promise<void> {
    for (const h of this.hosts) this.successorIfDue(h);
  }

  list(): RunnerRecord[] {
    return [...this.sessions.values()].map((l) => ({ ...l.record }));
  }

  async drain(id: string): Promise<void> {
    const l = this.sessions.get(id);
    if (!l || l.record.state === "draining") return;
    l.requested = true;
    l.record.state = "draining";
    l.record.sinceMs = this.o.clock.now();
    this.trySend(l.host, { op: "drain", id });
  }

  async terminate(id: string): Promise<void> {
    const l = this.sessions.get(id);
    if (!l) return;
    l.requested = true;
    this.trySend(l.host, { op: "terminate", id });
    await within(this.o.clock, this.o.drainTimeoutMs, l.ended, undefined);
  }

  onExit(listener: (exit: RunnerExit) => void): void {
    this.listeners.push(listener);
  }

  /** Retires every host and waits for it to exit (killing it after the bound); reaps what they leave. */
  async reapFreeSlots(): Promise<string[]> {
    this.stopping = true;
    await Promise.allSettled([...this.starting.values()]); // a successor being started is retired too
    const hosts = [...this.hosts];
    for (const h of hosts) this.trySend(h, { op: "retire" });
    const deadline = this.o.clock.now() + this.o.drainTimeoutMs;
    await Promise.all(hosts.map(async (h) => {
      if ((await within(this.o.clock, Math.max(0, deadline - this.o.clock.now()), h.exited, "late" as const)) === "late") h.kill("SIGKILL");
      await this.handled.get(h);
    }));
    return [];
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const h of this.hosts) h.disconnect();
  }

  private track(host: HostProcess, record: RunnerRecord): Live {
    let end = () => {};
    const ended = new Promise<void>((r) => (end = r));
    const live: Live = { record, host, requested: false, ended, end };
    this.sessions.set(record.id, live);
    return live;
  }

  /** The host taking new sessions for this isolation: the newest one not retiring, started if need be. */
  private async activeHost(isolation: PoolIsolation): Promise<HostProcess> {
    const hosts = [...this.hosts].filter((h) => h.state.isolation === isolation && !h.retiring && h.ready);
    const newest = hosts.sort((a, b) => b.state.launchedAtMs - a.state.launchedAtMs)[0];
    if (newest && newest.launched < this.o.maxSessions) return newest;
    return this.startHost(isolation);
  }

  private startHost(isolation: PoolIsolation): Promise<HostProcess> {
    const pending = this.starting.get(isolation);
    if (pending) return pending;
    const p = this.spawnHost(isolation).finally(() => this.starting.delete(isolation));
    this.starting.set(isolation, p);
    return p;
  }

  private async spawnHost(isolation: PoolIsolation): Promise<HostProcess> {
    let range = 0;
    while (this.ranges.has(range)) range++;
    this.ranges.add(range);
    const slotBase = this.o.slotBase + range * this.o.slotsPerHost;
    const hostId = `host-${range}-${this.o.clock.now().toString(36)}`;
    try {
      const host = await HostProcess.spawn({
        dir: join(this.root, "controller", `host-${range}`), command: this.o.command, clock: this.o.clock, startTimeoutMs: this.o.startTimeoutMs,
        state: { hostId, isolation, range, slotBase, slots: this.o.slotsPerHost, launchedAtMs: this.o.clock.now() },
        args: [
          "--work-root", this.root, "--slot-base", String(slotBase), "--slots", String(this.o.slotsPerHost), "--host-id", hostId,
          "--isolation", isolation, "--max-sessions", String(this.o.maxSessions), "--max-age", `${this.o.maxAgeMs}ms`,
          "--runner-idle-timeout", `${this.o.runnerIdleTimeoutMs}ms`, ...(this.o.hostArgs ?? []),
        ],
      });
      this.watch(host);
      this.o.logger?.info({ host: hostId, pid: host.state.pid, slots: `${slotBase}..${slotBase + this.o.slotsPerHost - 1}`, isolation }, "runner host started");
      return host;
    } catch (err) {
      // whatever it made in its slots (it died or hung while starting) is reaped before the range is reused
      await this.reapRange({ range, slotBase, slots: this.o.slotsPerHost, hostId });
      this.ranges.delete(range);
      throw err;
    }
  }

  /** Starts the successor of a host near its limit; once that one answers, the old host retires. */
  private successorIfDue(host: HostProcess): void {
    if (this.closed || this.stopping || host.retiring || host.succeeded || !host.ready) return;
    const age = this.o.clock.now() - host.state.launchedAtMs;
    const leadMs = Math.min(60_000, this.o.maxAgeMs / 10);
    const due = host.launched >= this.o.maxSessions - this.o.slotsPerHost || (this.o.maxAgeMs > 0 && age >= this.o.maxAgeMs - leadMs);
    if (!due || this.starting.has(host.state.isolation)) return;
    host.succeeded = true;
    void this.startHost(host.state.isolation).then(
      () => {
        host.retiring = true;
        this.trySend(host, { op: "retire" });
      },
      (err: unknown) => {
        host.succeeded = false; // keep serving; the next launch or tick tries again
        this.o.logger?.error({ err: String(err) }, "cannot start a successor runner host");
      },
    );
  }

  private watch(host: HostProcess): void {
    this.hosts.add(host);
    host.onEvent((e) => this.onHostEvent(host, e));
    this.handled.set(host, host.exited.then((x) => this.hostGone(host, x)).finally(() => this.handled.delete(host)));
  }

  private onHostEvent(host: HostProcess, e: HostEvent): void {
    if (e.type === "retiring") {
      host.retiring = true;
      return;
    }
    if (e.type === "hello") return;
    const l = e.id === null ? undefined : this.sessions.get(e.id);
    if (!l) return;
    if (e.type === "session_state") {
      applySessionState(l.record, e);
    } else if (e.type === "session_exited") {
      this.ended(l, { code: e.code, signal: null }, e.lifetimeMs, e.reaped, e.reason);
    } else {
      this.o.logger?.warn({ session: l.record.id, code: e.code, message: e.message }, "the runner host refused a session");
      this.ended(l, { code: 2, signal: null }, this.o.clock.now() - l.record.launchedAtMs, [], `${e.code}: ${e.message}`);
    }
  }

  private ended(l: Live, how: HostExit, lifetimeMs: number, reaped: string[], logTail: string): void {
    if (this.sessions.get(l.record.id) !== l) return;
    this.sessions.delete(l.record.id);
    l.end();
    const exit: RunnerExit = { runner: { ...l.record }, code: how.code, signal: how.signal, lifetimeMs, requested: l.requested, logTail, reaped };
    for (const fn of this.listeners) fn(exit);
  }

  /** A host exited: reap its slots unless it ended cleanly, then report its sessions as exited. */
  private async hostGone(host: HostProcess, x: HostExit): Promise<void> {
    this.hosts.delete(host);
    if (this.closed) return; // the next controller reaps it
    const orphans = [...this.sessions.values()].filter((l) => l.host === host);
    // An adopted host's exit status is unknown (null): without a signal and sessions, it retired.
    const clean = orphans.length === 0 && x.signal === null && (x.code === 0 || x.code === null);
    if (!clean) this.o.logger?.warn({ host: host.state.hostId, code: x.code, signal: x.signal, sessions: orphans.length }, "runner host died: reaping its slots");
    const reaped = clean ? [] : await this.reapRange(host.state);
    await host.removeState();
    this.ranges.delete(host.state.range);
    const now = this.o.clock.now();
    // Ended by the host's death, not by a fault of their own: not start crashes of the pool (a host
    // that cannot start makes launch() throw instead, which backs the pool off).
    for (const [i, l] of orphans.entries()) {
      l.requested = true;
      this.ended(l, { code: x.code, signal: x.signal ?? "host exited" }, now - l.record.launchedAtMs, i === 0 ? reaped : [], `runner host ${host.state.hostId} exited`);
    }
  }

  private async reapRange(state: Pick<HostState, "range" | "slotBase" | "slots" | "hostId">): Promise<string[]> {
    const reaped: string[] = [];
    for (let i = 0; i < state.slots; i++) {
      const index = state.slotBase + i;
      const slot: SlotRef = { index, dir: join(this.root, "controller", `host-${state.range}`), workDir: join(this.root, `slot-${index}`) };
      try {
        reaped.push(...(await killProcessesUnder(slot.workDir)), ...(await this.o.reaper.reap(slot)));
      } catch (err) {
        this.o.logger?.error({ err, slot: index }, "reaping a runner slot failed");
      }
    }
    return reaped;
  }

  private trySend(host: HostProcess, cmd: Parameters<HostProcess["send"]>[0]): void {
    try {
      host.send(cmd);
    } catch (err) {
      this.o.logger?.warn({ host: host.state.hostId, err: String(err) }, "cannot reach the runner host");
    }
  }
}

/** Session ids start with their pool's name (`pool.range-seq-time`). */
function poolOf(id: string): string {
  return id.slice(0, Math.max(0, id.indexOf(".")));
}

/**
 * A session's new state onto its record. A draining record stays draining, unless the session
 * turns out busy: its lease was on its way when the drain came, and it runs that job.
 */
export function applySessionState(record: RunnerRecord, e: Extract<HostEvent, { type: "session_state" }>): void {
  if (record.state === "draining" && e.state !== "busy") return;
  record.state = e.state;
  record.sinceMs = e.sinceMs;
  if (e.state === "busy") record.everBusy = true;
}
