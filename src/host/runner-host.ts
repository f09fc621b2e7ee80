/**
 * The runner host: one long-lived process (or, for `deltaci run`, an object in the CLI's
 * process) serving many runner sessions. A session is a whole runner (createRunner): its own
 * single-use registration token, session token, slot and sandbox; it leases at most one job,
 * reports it and ends, and nothing of it is kept: its client, spool, env, secrets and tokens
 * go with it (the host's keep-alive connections to the server outlive it: they carry no token;
 * so do the last job's shape, image and limits, for the next prewarm, and the toolchain probe).
 * Only the trusted runner code stays warm; job code runs in the sandbox.
 *
 * Slots are the host's for its life: a slot is reaped once when the host starts, then recycled
 * between sessions (the sandbox backend keeps its disk image). A slot goes to its next session
 * without a reap only while the sandbox factory vouches for it (`isSlotClean`: it reaped the slot
 * and every teardown there since succeeded or is still running); otherwise, and after a session
 * that ended abnormally, it is reaped first. A session prewarms its slot's sandbox while it
 * registers and waits; once it ends cleanly, the slot's next sandbox is built at once (on the
 * spare job disk the factory made when the job's sandbox was disposed of). Teardown stays off
 * every job's path: dispose returns once the job's data is unreachable, the rest runs behind.
 *
 * Lifecycle: `init()` once; `launch()`, `drain()`, `terminate()` from one caller; state reaches
 * the caller only as typed `HostEvent`s. `retire()` stops taking sessions, stops idle ones and
 * resolves `drained` once none is left. `close()` stops every session and disposes of warm
 * sandboxes. The host counts sessions and age so its supervisor can recycle it (maxSessions, maxAgeMs).
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { Clock } from "../base/clock.ts";
import { DeltaError } from "../base/errors.ts";
import { ConnectionPool } from "../client/http.ts";
import { createRunner, type RunnerSettings } from "../runner/create-runner.ts";
import type { RunnerLogger } from "../runner/ports.ts";
import type { RunnerEvent } from "../runner/runner-events.ts";
import { WarmShapes } from "../runner/warm-shape.ts";
import { SharedToolchains } from "../runner/capabilities.ts";
import { defaults } from "../config/defaults.ts";
import type { SandboxFactory, SlotInfo } from "../sandbox/types.ts";
import type { HostEvent, SessionState, SessionView } from "../protocol/host-protocol.ts";

export interface LaunchSession {
  /** Chosen by the supervisor; unique for the host's life. */
  id: string;
  registrationToken: string;
  serverUrl: string;
  labels: string[];
}

export interface RunnerHostOptions {
  slots: SlotInfo[];
  sandboxFactory: SandboxFactory;
  /** Every session's settings but its server and labels (which come with each launch). */
  settings: Omit<RunnerSettings, "serverUrl" | "labels">;
  clock: Clock;
  logger: RunnerLogger;
  /** A host takes at most this many sessions, then retires (0: no bound). */
  maxSessions: number;
  /** A host takes sessions for at most this long, then retires (0: no bound). */
  maxAgeMs: number;
}

interface Session {
  view: SessionView;
  slot: SlotInfo;
  stop: AbortController;
  /** Drains the session: it ends unless it already holds a job (see `RunnerDeps.drain`). */
  drain: AbortController;
  done: Promise<void>;
}

export class RunnerHost {
  private readonly o: RunnerHostOptions;
  private readonly sessions = new Map<string, Session>();
  /** Slots whose last session ended abnormally: reaped before the next one. */
  private readonly dirty = new Set<number>();
  private readonly busySlots = new Set<number>();
  private readonly listeners: Array<(e: HostEvent) => void> = [];
  private readonly startedAtMs: number;
  private served = 0;
  private retiring = false;
  /** Set by `stopPrewarming()`: no more sandboxes are built ahead. */
  private prewarmStopped = false;
  private onDrained: (() => void) | null = null;
  /** The sessions' keep-alive connections to the server: set up once, not per session. */
  private readonly connections: ConnectionPool;
  /** The shape of the host's last job, prewarmed in every slot (read once, written when it changes). */
  private readonly warmShapes: WarmShapes;
  /** The host image's toolchains, probed for the sessions at most every `hostToolchainsRecheckMs`. */
  private readonly toolchains: SharedToolchains;
  /** Resolves once `retire()` was called and no session is left. */
  readonly drained: Promise<void>;

  constructor(opts: RunnerHostOptions) {
    this.o = opts;
    this.startedAtMs = opts.clock.now();
    this.connections = new ConnectionPool({ connectTimeoutMs: Math.min(opts.settings.requestTimeoutMs, 10_000) });
    this.warmShapes = new WarmShapes(opts.settings.cacheDir === null ? null : join(opts.settings.cacheDir, "warm-shape.json"));
    const toolchainsFile = opts.settings.toolchainsCache ?? (opts.settings.cacheDir === null ? null : join(opts.settings.cacheDir, "toolchains.json"));
    this.toolchains = new SharedToolchains({ cacheFile: toolchainsFile, recheckMs: defaults.hostToolchainsRecheckMs, clock: opts.clock });
    this.drained = new Promise((resolve) => (this.onDrained = resolve));
  }

  /** Reaps every slot (what a crashed predecessor left) and prepares the sandbox backend. */
  async init(): Promise<string[]> {
    // The slots are independent: reaped at once (a host's start, or `deltaci run`'s, waits for the slowest only).
    const reaped = await Promise.all(this.o.slots.map(async (slot) => {
      const removed = await this.o.sandboxFactory.reapSlot(slot);
      await mkdir(slot.workDir, { recursive: true, mode: 0o711 });
      return removed;
    }));
    return reaped.flat();
  }

  /** No more sandboxes built ahead, for sessions launched or ending from now on (the owner expects no more jobs). */
  stopPrewarming(): void {
    this.prewarmStopped = true;
  }

  onEvent(listener: (e: HostEvent) => void): void {
    this.listeners.push(listener);
  }

  list(): SessionView[] {
    return [...this.sessions.values()].map((s) => ({ ...s.view }));
  }

  stats(): { served: number; ageMs: number; sessions: number; slots: number; retiring: boolean } {
    return { served: this.served, ageMs: this.o.clock.now() - this.startedAtMs, sessions: this.sessions.size, slots: this.o.slots.length, retiring: this.retiring };
  }

  launch(req: LaunchSession): SessionView {
    if (this.retiring) throw new DeltaError("E_RETIRING", "this runner host is retiring: it takes no new sessions");
    if (this.sessions.has(req.id)) throw new DeltaError("E_CONFLICT", `session ${req.id} exists`);
    const slot = this.o.slots.find((s) => !this.busySlots.has(s.index));
    if (!slot) throw new DeltaError("E_CAPACITY", `no free slot (this host has ${this.o.slots.length})`);
    this.busySlots.add(slot.index);
    this.served++;
    const now = this.o.clock.now();
    const view: SessionView = { id: req.id, state: "starting", slot: slot.index, launchedAtMs: now, sinceMs: now, everBusy: false, jobId: null };
    const session: Session = { view, slot, stop: new AbortController(), drain: new AbortController(), done: Promise.resolve() };
    this.sessions.set(req.id, session);
    session.done = this.run(session, req);
    // At its limit the host takes no more sessions, but this one (and the other idle ones) still
    // take their job: draining them now would waste their registrations.
    if (this.limitReached()) this.stopTaking();
    return { ...view };
  }

  /** An idle session stops now; one that holds a job (or gets the lease it was waiting for) runs it to its end. */
  drain(id: string): void {
    const s = this.sessions.get(id);
    if (!s || s.view.state === "draining") return;
    // A lease on its way back is not lost: the drain only ends a session that holds no job yet.
    s.drain.abort(new Error("drained"));
    if (s.view.state !== "busy") this.setState(s, "draining"); // one that holds a job stays listed busy
  }

  /** Stops a session now (a running job is stopped and reported as runner_error) and waits for its end. */
  async terminate(id: string): Promise<void> {
    const s = this.sessions.get(id);
    if (!s) return;
    s.stop.abort(new Error("terminated"));
    await s.done;
  }

  /** No new sessions; idle ones stop; `drained` resolves when the last one ended. */
  retire(): void {
    this.stopTaking();
    for (const s of this.sessions.values()) if (s.view.state !== "busy") this.drain(s.view.id);
    this.checkDrained();
  }

  /** No new sessions from now on (announced once); the sessions it has run on. */
  private stopTaking(): void {
    if (this.retiring) return;
    this.retiring = true;
    const { served, ageMs } = this.stats();
    this.o.logger.info({ served, ageMs }, "runner host retiring");
    this.emit({ type: "retiring", served, ageMs });
  }

  /**
   * Stops every session, then reaps every slot: warm sandboxes and the slots' own objects (parent
   * cgroups, work dirs) are gone when it resolves. The caller closes the factory after.
   */
  async close(): Promise<string[]> {
    this.retiring = true;
    await Promise.all([...this.sessions.keys()].map((id) => this.terminate(id)));
    const reaped = await Promise.all(this.o.slots.map((slot) => this.o.sandboxFactory.reapSlot(slot).catch(() => [])));
    await this.connections.close().catch(() => {});
    return reaped.flat();
  }

  /** A slot is reused as is only when no session ended abnormally in it and the factory vouches for it. */
  private needsReap(slot: SlotInfo): boolean {
    return this.dirty.has(slot.index) || !this.o.sandboxFactory.isSlotClean(slot);
  }

  private limitReached(): boolean {
    const { served, ageMs } = this.stats();
    return (this.o.maxSessions > 0 && served >= this.o.maxSessions) || (this.o.maxAgeMs > 0 && ageMs >= this.o.maxAgeMs);
  }

  private async run(s: Session, req: LaunchSession): Promise<void> {
    const { clock } = this.o;
    const base = this.o.logger;
    const logger: RunnerLogger = {
      info: (f, m) => base.info({ session: req.id, slot: s.slot.index, ...f }, m),
      warn: (f, m) => base.warn({ session: req.id, slot: s.slot.index, ...f }, m),
      error: (f, m) => base.error({ session: req.id, slot: s.slot.index, ...f }, m),
    };
    const onEvent = (e: RunnerEvent) => {
      if (e.type === "registered") this.setState(s, "idle");
      else if (e.type === "leased") {
        s.view.jobId = e.jobId;
        s.view.everBusy = true;
        this.setState(s, "busy");
      }
    };
    let code: number | null = null;
    let reason = "crashed";
    let reaped: string[] = [];
    try {
      if (this.needsReap(s.slot)) {
        reaped = await this.o.sandboxFactory.reapSlot(s.slot);
        this.dirty.delete(s.slot.index);
      }
      // The slot is clean (reaped by the host, or vouched for by the factory): the session need not reap it.
      const runner = createRunner(
        { ...this.o.settings, serverUrl: req.serverUrl, labels: req.labels, prewarm: this.o.settings.prewarm && !this.prewarmStopped },
        { registrationToken: req.registrationToken, name: req.id, slot: s.slot, reapSlot: false },
        { sandboxFactory: this.o.sandboxFactory, clock, logger, onEvent, connections: this.connections, warmShapes: this.warmShapes,
          toolchains: () => this.toolchains.get() },
      );
      const exit = await runner.run(s.stop.signal, s.drain.signal);
      code = exit.code;
      reason = typeof exit.reason === "string" ? exit.reason : String(exit.reason);
    } catch (err) {
      base.error({ session: req.id, err: String(err) }, "runner session failed");
      code = 2;
    }
    if (code !== 0) {
      // It may have left something behind (a dispose that hit its bound): reaped before reuse.
      this.dirty.add(s.slot.index);
    } else if (this.o.settings.prewarm && !this.prewarmStopped && !this.retiring && this.o.sandboxFactory.isSlotClean(s.slot)) {
      this.prewarm(s.slot);
    }
    this.sessions.delete(req.id);
    this.busySlots.delete(s.slot.index);
    this.emit({
      type: "session_exited", id: req.id, code, reason, jobId: s.view.jobId, everBusy: s.view.everBusy,
      lifetimeMs: clock.now() - s.view.launchedAtMs, reaped,
    });
    this.checkDrained();
  }

  /** The slot's next sandbox, built now (the shape of the host's last job): never rejects. */
  private prewarm(slot: SlotInfo): void {
    void this.warmShapes.spec(slot).then((spec) => this.o.sandboxFactory.prewarm(spec));
  }

  /** A draining session only turns busy (the lease it was getting when drained). */
  private setState(s: Session, state: SessionState): void {
    if (s.view.state === state || (s.view.state === "draining" && state !== "busy")) return;
    s.view.state = state;
    s.view.sinceMs = this.o.clock.now();
    this.emit({ type: "session_state", id: s.view.id, state, sinceMs: s.view.sinceMs, jobId: s.view.jobId });
  }

  private checkDrained(): void {
    if (this.retiring && this.sessions.size === 0) this.onDrained?.();
  }

  private emit(e: HostEvent): void {
    for (const l of this.listeners) l(e);
  }
}
