/**
 * One runner host process as its controller sees it: spawned detached (so it outlives a
 * controller crash) with its log in `<dir>/host.log`, or adopted from `<dir>/state.json` by a
 * restarted controller; reached over its unix socket (the runner-host channel). Events arrive
 * validated; `exited` resolves once the process is gone (its exit status when this controller
 * spawned it, else found by polling /proc: pid + start time, so pid reuse is never mistaken).
 */
import { spawn } from "node:child_process";
import { connect, type Socket } from "node:net";
import { mkdir, open, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Value } from "@sinclair/typebox/value";
import { within, type Clock } from "../base/clock.ts";
import { DeltaError } from "../base/errors.ts";
import { HostEvent, type HostCommand } from "../protocol/host-protocol.ts";
import { readJsonLines, writeJsonLine } from "../protocol/json-lines.ts";
import { fileTail, isSameProcess, readProcStat } from "./proc.ts";

export interface HostState {
  version: 1;
  hostId: string;
  isolation: "oci" | "process";
  /** Index of the host's slot range (slots rangeBase .. rangeBase + slots - 1). */
  range: number;
  slotBase: number;
  slots: number;
  socket: string;
  pid: number;
  startTime: string;
  launchedAtMs: number;
}

export interface HostExit {
  code: number | null;
  signal: string | null;
}

export class HostProcess {
  private socket: Socket | null = null;
  private readonly listeners: Array<(e: HostEvent) => void> = [];
  private gone: ((x: HostExit) => void) | null = null;
  private hello: ((e: Extract<HostEvent, { type: "hello" }>) => void) | null = null;
  private readonly watching = new AbortController();
  /** Resolves once the process has exited. */
  readonly exited: Promise<HostExit>;
  /** Sessions launched on it by this controller (for recycling). */
  launched = 0;
  retiring = false;
  /** A successor was asked for (the host keeps taking sessions until that one answers). */
  succeeded = false;
  ready = false;
  /** What the host said when this controller connected (its sessions, for adoption). */
  helloInfo: Extract<HostEvent, { type: "hello" }> | null = null;

  private constructor(readonly state: HostState, readonly dir: string, private readonly clock: Clock) {
    this.exited = new Promise((resolve) => (this.gone = resolve));
  }

  /** Starts a host; resolves once it answered on its socket (its `hello`), or throws E_SPAWN. */
  static async spawn(o: {
    dir: string; command: { command: string; args: string[] }; args: string[]; state: Omit<HostState, "version" | "pid" | "startTime" | "socket">;
    clock: Clock; startTimeoutMs: number;
  }): Promise<HostProcess> {
    await mkdir(o.dir, { recursive: true, mode: 0o700 });
    const socket = join(o.dir, "host.sock");
    const log = await open(join(o.dir, "host.log"), "a", 0o600);
    let child;
    try {
      child = spawn(o.command.command, [...o.command.args, "runner-host", "--socket", socket, ...o.args], { detached: true, stdio: ["ignore", log.fd, log.fd] });
    } finally {
      await log.close();
    }
    const pid = child.pid;
    if (pid === undefined) {
      const err = await new Promise<Error>((res) => child.once("error", res));
      throw new DeltaError("E_SPAWN", `cannot start a runner host (${o.command.command}): ${err.message}`, { cause: err });
    }
    child.on("error", () => {});
    child.unref();
    const st = await readProcStat(pid);
    const state: HostState = { version: 1, ...o.state, socket, pid, startTime: st?.startTime ?? "" };
    const host = new HostProcess(state, o.dir, o.clock);
    child.once("exit", (code, signal) => host.gone?.({ code, signal }));
    await host.writeState();
    try {
      await host.connect(o.startTimeoutMs);
    } catch (err) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
      await host.exited;
      const logTail = await fileTail(join(o.dir, "host.log"), 2048);
      throw new DeltaError("E_SPAWN", `the runner host did not start: ${(err as Error).message} (see ${join(o.dir, "host.log")})`, { cause: err, details: { logTail } });
    }
    return host;
  }

  /** A host an earlier controller started, if it still runs and answers; else null (the caller reaps). */
  static async adopt(dir: string, clock: Clock, timeoutMs: number): Promise<{ host: HostProcess | null; state: HostState | null }> {
    const state = await readState(dir);
    if (state === null || !(await isSameProcess(state.pid, state.startTime))) return { host: null, state };
    const host = new HostProcess(state, dir, clock);
    void host.watchPid();
    try {
      await host.connect(timeoutMs);
      return { host, state };
    } catch {
      return { host: null, state };
    }
  }

  onEvent(listener: (e: HostEvent) => void): void {
    this.listeners.push(listener);
  }

  send(cmd: HostCommand): void {
    if (!this.socket) throw new DeltaError("E_UNAVAILABLE", `runner host ${this.state.hostId} is not connected`);
    writeJsonLine(this.socket, cmd);
  }

  kill(signal: NodeJS.Signals): void {
    void isSameProcess(this.state.pid, this.state.startTime).then((same) => {
      if (!same) return;
      try {
        process.kill(this.state.pid, signal);
      } catch {}
    });
  }

  /** Stops listening; the process goes on (a new controller adopts it). */
  disconnect(): void {
    this.watching.abort();
    this.socket?.destroy();
    this.socket = null;
  }

  async removeState(): Promise<void> {
    await rm(join(this.dir, "state.json"), { force: true });
    await rm(this.state.socket, { force: true });
  }

  private async writeState(): Promise<void> {
    const tmp = join(this.dir, "state.json.tmp");
    await writeFile(tmp, JSON.stringify(this.state), { mode: 0o600 });
    await rename(tmp, join(this.dir, "state.json"));
  }

  /** Connects (retrying while the host starts) and waits for its hello. */
  private async connect(timeoutMs: number): Promise<void> {
    const deadline = this.clock.now() + timeoutMs;
    const hello = new Promise<Extract<HostEvent, { type: "hello" }>>((resolve) => (this.hello = resolve));
    for (;;) {
      const sock = await new Promise<Socket | null>((resolve) => {
        const s = connect(this.state.socket);
        s.once("connect", () => resolve(s));
        s.once("error", () => resolve(null));
      });
      if (sock) {
        this.attach(sock);
        break;
      }
      const early = await within(this.clock, 20, this.exited, null);
      if (early) throw new Error(`it exited (${early.signal ?? `code ${early.code}`})`);
      if (this.clock.now() > deadline) throw new Error(`no answer on ${this.state.socket} within ${timeoutMs} ms`);
    }
    const left = Math.max(1, deadline - this.clock.now());
    const got = await within(this.clock, left, Promise.race([hello, this.exited.then(() => null)]), null);
    if (got === null) throw new Error("no hello from the runner host");
    this.ready = true;
    this.retiring = got.retiring;
    this.helloInfo = got;
  }

  private attach(sock: Socket): void {
    this.socket = sock;
    sock.on("error", () => {});
    sock.on("close", () => {
      if (this.socket === sock) this.socket = null;
    });
    readJsonLines(sock, (v) => {
      if (!Value.Check(HostEvent, v)) return;
      if (v.type === "hello") this.hello?.(v);
      for (const l of this.listeners) l(v);
    });
  }

  /** For adopted hosts (not our child): notices the exit by polling /proc. */
  private async watchPid(): Promise<void> {
    try {
      while (await isSameProcess(this.state.pid, this.state.startTime)) await this.clock.sleep(250, this.watching.signal);
    } catch {
      return; // disconnected: no longer ours to watch
    }
    this.gone?.({ code: null, signal: null });
  }
}

async function readState(dir: string): Promise<HostState | null> {
  try {
    const s = JSON.parse(await readFile(join(dir, "state.json"), "utf8")) as HostState;
    return s.version === 1 && typeof s.hostId === "string" && Number.isInteger(s.pid) ? s : null;
  } catch {
    return null;
  }
}
