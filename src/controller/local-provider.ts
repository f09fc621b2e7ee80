/**
 * Runners as local processes. Each runner gets a slot `<index>`: `<workRoot>/controller/slot-<index>/`
 * holds the controller's state of it (`state.json`: pid + start time, pool, launch time), its
 * registration token file (the runner reads and deletes it), its log (`runner.log`, stdout
 * and stderr) and its typed events (`events.jsonl`, `--events-file`); `<workRoot>/slot-<index>/` is the runner's `--work-dir` (sandboxes, spool; the
 * parent, `<workRoot>`, holds the runners' shared caches). The runner derives its uid/gid range
 * and cgroup from `--slot <index>`. Runners are started
 * detached (own session, stdio to the log file) so they outlive a controller crash; the state
 * on disk is all a new controller needs to adopt them (pid reuse is caught by the start time).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { constants } from "node:os";
import { join, resolve } from "node:path";
import type { Logger } from "pino";
import type { Clock } from "../base/clock.ts";
import { DeltaError } from "../base/errors.ts";
import { catchesSignal, childPids, fileTail, findProcessesByArg, isSameProcess, killProcessesUnder, readProcStat } from "./proc.ts";
import type { InitResult, LaunchRequest, RunnerExit, RunnerProvider, RunnerRecord, SlotReaper, SlotRef } from "./provider.ts";
import type { RunnerState } from "./types.ts";

export interface LocalProviderOptions {
  workRoot: string;
  /** How to start the CLI (`deltaci`): e.g. `node bin/deltaci.js`; `runner …` is appended. */
  command: { command: string; args: string[] };
  runnerIdleTimeoutMs: number;
  drainTimeoutMs: number;
  /** First slot index: controllers sharing a host need disjoint slot ranges (uid ranges, cgroups). */
  slotBase?: number;
  reaper: SlotReaper;
  clock: Clock;
  logger?: Logger | undefined;
  /** Extra arguments for every runner (after the controller's own). */
  runnerArgs?: readonly string[];
}

interface SlotState {
  version: 1;
  id: string;
  pool: string;
  pid: number | null;
  startTime: string | null;
  launchedAtMs: number;
  tokenFile: string;
}

interface Live {
  record: RunnerRecord;
  slot: SlotRef;
  pid: number;
  startTime: string;
  tokenFile: string;
  requested: boolean;
  drainedAtMs: number | null;
  exiting: boolean;
  /** How far the runner's events file was read, and whether its `registered` and `leased` events were seen. */
  logOffset: number;
  registered: boolean;
  leased: boolean;
  /** Settles once the runner's pid is in its state file (an exit waits for it before removing that file). */
  recorded: Promise<void>;
}

/** A runner's typed events (`--events-file`), one JSON line each; `registered` and `leased` are the ones a provider needs. */
const EVENTS_FILE = "events.jsonl";
const REGISTERED_EVENT = '"type":"registered"';
const LEASED_EVENT = '"type":"leased"';
/** How a runner process is drained (the runner's DRAIN_SIGNAL, src/runner/runner-events.ts; the conformance test drains real runners). */
const DRAIN_SIGNAL = "SIGUSR2";

export class LocalProvider implements RunnerProvider {
  private readonly o: LocalProviderOptions;
  private readonly root: string;
  private readonly live = new Map<string, Live>();
  /** Slot indexes in use: live runners, launches in progress and slots being reaped. */
  private readonly busySlots = new Set<number>();
  /** Every slot index a runner of this provider ran in. */
  private readonly usedSlots = new Set<number>();
  private readonly listeners: Array<(e: RunnerExit) => void> = [];
  private closed = false;

  constructor(opts: LocalProviderOptions) {
    this.o = opts;
    this.root = resolve(opts.workRoot);
  }

  private slotRef(index: number): SlotRef {
    return { index, dir: join(this.root, "controller", `slot-${index}`), workDir: join(this.root, `slot-${index}`) };
  }

  async init(): Promise<InitResult> {
    // the work root and slot dirs must be traversable (not listable) by the slots' mapped uids
    await mkdir(this.root, { recursive: true, mode: 0o711 });
    const slotsDir = join(this.root, "controller");
    await mkdir(slotsDir, { recursive: true, mode: 0o700 });
    const adopted: RunnerRecord[] = [];
    const reaped: string[] = [];
    for (const name of await readdir(slotsDir)) {
      const m = /^slot-(\d+)$/.exec(name);
      if (!m) continue;
      const slot = this.slotRef(Number(m[1]));
      this.usedSlots.add(slot.index); // an earlier controller's slot: reaped with ours when we stop with our runners
      const state = await readState(slot.dir);
      if (state === null) {
        if (await hasEntries(slot.workDir)) reaped.push(...(await this.reap(slot)));
        continue;
      }
      let pid = state.pid;
      let startTime = state.startTime;
      if (pid === null) {
        // the controller died between writing the state and recording the pid: find the runner by its token path
        const [found] = await findProcessesByArg(state.tokenFile);
        const st = found === undefined ? null : await readProcStat(found);
        if (found !== undefined && st) [pid, startTime] = [found, st.startTime];
      }
      if (pid !== null && startTime !== null && (await isSameProcess(pid, startTime))) {
        const now = this.o.clock.now();
        const record: RunnerRecord = { id: state.id, pool: state.pool, state: "idle", sinceMs: now, launchedAtMs: state.launchedAtMs, adopted: true, everBusy: false, handle: String(pid) };
        const live: Live = { record, slot, pid, startTime, tokenFile: state.tokenFile, requested: false, drainedAtMs: null, exiting: false, logOffset: 0, registered: false, leased: false, recorded: Promise.resolve() };
        record.state = await this.probe(live);
        if (record.state === "busy") record.everBusy = true;
        this.live.set(record.id, live);
        this.busySlots.add(slot.index);
        adopted.push({ ...record });
        this.o.logger?.info({ runner: record.id, pid, pool: record.pool, state: record.state }, "adopted a running runner");
      } else {
        reaped.push(...(await this.reap(slot)));
        await rm(join(slot.dir, "state.json"), { force: true });
        await rm(state.tokenFile, { force: true });
        this.o.logger?.info({ runner: state.id, slot: slot.index }, "reaped the slot of a runner that died");
      }
    }
    return { adopted, reaped };
  }

  async launch(req: LaunchRequest): Promise<RunnerRecord> {
    if (this.closed) throw new DeltaError("E_CLOSED", "provider closed");
    let index = this.o.slotBase ?? 0;
    while (this.busySlots.has(index)) index++;
    this.busySlots.add(index);
    this.usedSlots.add(index);
    try {
      return await this.launchInSlot(index, req);
    } catch (err) {
      this.busySlots.delete(index);
      throw err;
    }
  }

  private async launchInSlot(index: number, req: LaunchRequest): Promise<RunnerRecord> {
    const slot = this.slotRef(index);
    const now = this.o.clock.now();
    await mkdir(slot.dir, { recursive: true, mode: 0o700 });
    await mkdir(slot.workDir, { recursive: true, mode: 0o711 });
    const tokenFile = join(slot.dir, "registration-token");
    await writeFile(tokenFile, req.registrationToken, { mode: 0o600 });
    const id = `${req.pool.name}-${index}-${now.toString(36)}`;
    const state: SlotState = { version: 1, id, pool: req.pool.name, pid: null, startTime: null, launchedAtMs: now, tokenFile };
    await writeState(slot.dir, state);
    const args = [
      ...this.o.command.args, "runner",
      "--server", req.serverUrl,
      "--registration-token-file", tokenFile,
      "--isolation", req.pool.isolation,
      "--work-dir", slot.workDir,
      "--slot", String(index),
      "--idle-timeout", `${this.o.runnerIdleTimeoutMs}ms`,
      "--events-file", join(slot.dir, EVENTS_FILE),
      ...(req.pool.labels.length > 0 ? ["--labels", req.pool.labels.join(",")] : []),
      ...(this.o.runnerArgs ?? []),
    ];
    await rm(join(slot.dir, EVENTS_FILE), { force: true });
    const log = await open(join(slot.dir, "runner.log"), "w", 0o600);
    let child: ChildProcess;
    let exit: Promise<[number | null, NodeJS.Signals | null]>;
    try {
      child = spawn(this.o.command.command, args, { detached: true, stdio: ["ignore", log.fd, log.fd] });
      // Caught before the first await: a runner killed right after its spawn must not be missed
      // (a missed exit left a "starting" runner holding its slot forever).
      exit = new Promise((res) => child.once("exit", (code, signal) => res([code, signal])));
    } finally {
      await log.close();
    }
    const pid = child.pid;
    if (pid === undefined) {
      const err = await new Promise<Error>((res) => child.once("error", res));
      await rm(tokenFile, { force: true });
      await rm(join(slot.dir, "state.json"), { force: true });
      throw new DeltaError("E_SPAWN", `cannot start a runner (${this.o.command.command}): ${err.message}`, { cause: err });
    }
    child.on("error", () => {});
    const record: RunnerRecord = { id, pool: req.pool.name, state: "starting", sinceMs: now, launchedAtMs: now, adopted: false, everBusy: false, handle: String(pid) };
    let recorded = () => {};
    const live: Live = { record, slot, pid, startTime: "", tokenFile, requested: false, drainedAtMs: null, exiting: false, logOffset: 0, registered: false, leased: false, recorded: new Promise((r) => (recorded = r)) };
    this.live.set(id, live);
    void exit.then(([code, signal]) => this.exited(live, code, signal));
    child.unref();
    try {
      const st = await readProcStat(pid);
      live.startTime = st?.startTime ?? "";
      if (st) await writeState(slot.dir, { ...state, pid, startTime: st.startTime });
    } finally {
      recorded();
    }
    return { ...record };
  }

  /** The state of a live runner, from what can be seen of it. */
  private async probe(l: Live): Promise<RunnerState> {
    if (!l.leased) await this.scanEvents(l);
    // A drained runner whose lease was already on its way runs that job to its end.
    if (l.leased) return "busy";
    if (l.drainedAtMs !== null) return "draining";
    if (await exists(l.tokenFile)) return "starting";
    // From its events only: an oci runner's own children (the sandbox it prewarms while it
    // registers) are no job, and read as busy they hid an idle runner from the scaler.
    return l.registered ? "idle" : "starting";
  }

  /** Reads the runner's events since the last look; a `leased` event makes it busy for good. */
  private async scanEvents(l: Live): Promise<void> {
    try {
      const f = await open(join(l.slot.dir, EVENTS_FILE), "r");
      try {
        const { size } = await f.stat();
        if (size <= l.logOffset) return;
        const start = Math.max(0, l.logOffset - REGISTERED_EVENT.length); // a marker split by the last read
        const buf = Buffer.alloc(Math.min(size - start, 1 << 20));
        await f.read(buf, 0, buf.length, start);
        l.logOffset = start + buf.length;
        if (buf.includes(REGISTERED_EVENT)) l.registered = true;
        if (buf.includes(LEASED_EVENT)) l.leased = true;
      } finally {
        await f.close();
      }
    } catch {}
  }

  async refresh(): Promise<void> {
    const now = this.o.clock.now();
    for (const l of [...this.live.values()]) {
      if (l.exiting) continue;
      if (l.record.adopted && !(await isSameProcess(l.pid, l.startTime))) {
        await this.exited(l, null, null);
        continue;
      }
      const state = await this.probe(l);
      if (l.exiting) continue;
      if (state !== l.record.state) {
        l.record.state = state;
        l.record.sinceMs = now;
      }
      if (state === "busy") l.record.everBusy = true;
      if (l.drainedAtMs !== null && !l.leased && now - l.drainedAtMs >= this.o.drainTimeoutMs && (await childPids(l.pid)).length === 0) {
        this.o.logger?.warn({ runner: l.record.id, pid: l.pid }, "drained runner did not exit in time: killing it");
        this.kill(l, "SIGKILL");
      }
    }
  }

  /** Runners whose exit is being processed (reaping) are listed as draining: they still hold a slot. */
  list(): RunnerRecord[] {
    return [...this.live.values()].map((l) => ({ ...l.record, ...(l.exiting ? { state: "draining" as const } : {}) }));
  }

  async drain(id: string): Promise<void> {
    const l = this.live.get(id);
    if (!l || l.exiting || l.drainedAtMs !== null) return;
    l.drainedAtMs = this.o.clock.now();
    l.requested = true;
    l.record.state = "draining";
    l.record.sinceMs = l.drainedAtMs;
    // A runner adopted from before the drain signal existed would die of it: drain it as that
    // version did, by its stop signal (a job it runs then ends as runner_error and is retried).
    if (l.record.adopted && !(await catchesSignal(l.pid, constants.signals[DRAIN_SIGNAL]))) {
      this.o.logger?.warn({ runner: id, pid: l.pid }, `the runner does not handle ${DRAIN_SIGNAL} (an older version): drained by SIGTERM`);
      this.kill(l, "SIGTERM", false);
      return;
    }
    this.kill(l, DRAIN_SIGNAL, false);
  }

  async terminate(id: string): Promise<void> {
    const l = this.live.get(id);
    if (!l || l.exiting) return;
    l.requested = true;
    this.kill(l, "SIGKILL");
  }

  /** Signals the runner (and with `group`, its whole process group), unless its pid was reused. */
  private kill(l: Live, signal: NodeJS.Signals, group = true): void {
    void (async () => {
      if (!(await isSameProcess(l.pid, l.startTime))) return;
      try {
        process.kill(group ? -l.pid : l.pid, signal);
      } catch {
        try {
          process.kill(l.pid, signal);
        } catch {}
      }
    })();
  }

  private async exited(l: Live, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    if (l.exiting || this.closed) return; // after close() the next controller reaps it
    l.exiting = true;
    await l.recorded;
    // A job that ended between two looks still counts: the exit says whether it ran one.
    if (!l.leased) await this.scanEvents(l);
    if (l.leased) l.record.everBusy = true;
    const now = this.o.clock.now();
    const logTail = await fileTail(join(l.slot.dir, "runner.log"), 2048);
    // a clean exit leaves nothing behind; anything else may have left a sandbox behind
    const reaped = code === 0 && !l.record.adopted ? [] : await this.reap(l.slot);
    await rm(l.tokenFile, { force: true });
    await rm(join(l.slot.dir, "state.json"), { force: true });
    this.live.delete(l.record.id);
    // Only now may the slot take its next runner: until here, its files and leftovers are this runner's.
    this.busySlots.delete(l.slot.index);
    const exit: RunnerExit = { runner: { ...l.record }, code, signal, lifetimeMs: now - l.record.launchedAtMs, requested: l.requested, logTail, reaped };
    for (const fn of this.listeners) fn(exit);
  }

  /** Removes a dead runner's leftovers from its slot; the caller holds the slot (no runner is launched into it meanwhile). */
  private async reap(slot: SlotRef): Promise<string[]> {
    try {
      const strays = await killProcessesUnder(slot.workDir);
      return [...strays, ...(await this.o.reaper.reap(slot))];
    } catch (err) {
      this.o.logger?.error({ err, slot: slot.index }, "reaping a runner slot failed");
      return [];
    }
  }

  async reapFreeSlots(): Promise<string[]> {
    const reaped: string[] = [];
    for (const index of [...this.usedSlots].sort((a, b) => a - b)) {
      if (this.busySlots.has(index)) continue;
      this.busySlots.add(index);
      try {
        reaped.push(...(await this.reap(this.slotRef(index))));
      } finally {
        this.busySlots.delete(index);
      }
      this.usedSlots.delete(index);
    }
    return reaped;
  }

  onExit(listener: (exit: RunnerExit) => void): void {
    this.listeners.push(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** Removes a slot's work dir (what a runner without a sandbox leaves); the fallback reaper. */
export const workDirReaper: SlotReaper = {
  async reap(slot) {
    if (!(await hasEntries(slot.workDir))) return [];
    const entries = await readdir(slot.workDir);
    await rm(slot.workDir, { recursive: true, force: true });
    await mkdir(slot.workDir, { recursive: true, mode: 0o711 });
    return entries.map((e) => `dir ${join(slot.workDir, e)}`);
  },
};

async function readState(dir: string): Promise<SlotState | null> {
  try {
    const s = JSON.parse(await readFile(join(dir, "state.json"), "utf8")) as SlotState;
    return s.version === 1 && typeof s.id === "string" ? s : null;
  } catch {
    return null;
  }
}

async function writeState(dir: string, state: SlotState): Promise<void> {
  const tmp = join(dir, "state.json.tmp");
  await writeFile(tmp, JSON.stringify(state), { mode: 0o600 });
  await rename(tmp, join(dir, "state.json"));
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function hasEntries(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length > 0;
  } catch {
    return false;
  }
}
