/**
 * A real `deltaci runner-host` process driven directly over the runner-host channel (NDJSON on
 * its unix socket), without a controller: tests and benches launch sessions with registration
 * tokens they mint, and wait for the host's typed events. `stop()` retires the host and waits for
 * its exit (SIGKILL after a bound); `kill()` is kill -9.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { openSync, closeSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { Value } from "@sinclair/typebox/value";
import { systemClock } from "../../src/base/clock.ts";
import { RUNNER_HOST_NODE_FLAGS, selfCommand } from "../../src/config/paths.ts";
import { CrunSandboxFactory } from "../../src/sandbox/oci/crun-sandbox-factory.ts";
import { ProcessSandboxFactory } from "../../src/sandbox/process/process-sandbox.ts";
import { slotInfo } from "../../src/sandbox/slots.ts";
import { HostEvent, type HostCommand } from "../../src/protocol/host-protocol.ts";
import { readJsonLines, writeJsonLine } from "../../src/protocol/json-lines.ts";

export type SessionExited = Extract<HostEvent, { type: "session_exited" }>;

export interface HostClient {
  pid: number;
  log: string;
  /** Every event received so far, in order. */
  events: HostEvent[];
  send(cmd: HostCommand): void;
  /** The first event (already received or coming) that `match` accepts. */
  waitFor<T extends HostEvent>(what: string, match: (e: HostEvent) => e is T, timeoutMs?: number): Promise<T>;
  /** Launches a session and resolves with its `session_exited` event. */
  session(id: string, registrationToken: string, serverUrl: string): Promise<SessionExited>;
  exited: Promise<{ code: number | null; signal: string | null }>;
  stop(timeoutMs?: number): Promise<void>;
  kill(): Promise<void>;
}

export interface HostClientOptions {
  dir: string;
  workRoot: string;
  slotBase: number;
  slots: number;
  isolation: "oci" | "process";
  /** `--host-id`; default test-host. */
  hostId?: string;
  /** Extra flags of `deltaci runner-host`. */
  args?: string[];
  /** Extra environment (e.g. NODE_OPTIONS). */
  env?: Record<string, string>;
}

export async function startHostClient(o: HostClientOptions): Promise<HostClient> {
  const socket = join(o.dir, "host.sock");
  const log = join(o.dir, "host.log");
  const fd = openSync(log, "a", 0o600);
  const self = selfCommand(RUNNER_HOST_NODE_FLAGS); // as the controller starts it
  let child: ChildProcess;
  try {
    child = spawn(self.command, [...self.args, "runner-host", "--socket", socket, "--work-root", o.workRoot, "--slot-base", String(o.slotBase),
      "--slots", String(o.slots), "--host-id", o.hostId ?? "test-host", "--isolation", o.isolation, "--log-level", "info", ...(o.args ?? [])], {
      stdio: ["ignore", fd, fd], env: { ...process.env, ...o.env },
    });
  } finally {
    closeSync(fd);
  }
  const pid = child.pid;
  if (pid === undefined) throw new Error("cannot start deltaci runner-host");
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const events: HostEvent[] = [];
  const waiters = new Set<() => void>();
  let sock: Socket | null = null;
  for (const deadline = Date.now() + 120_000; sock === null;) {
    sock = await new Promise<Socket | null>((resolve) => {
      const s = connect(socket);
      s.once("connect", () => resolve(s));
      s.once("error", () => resolve(null));
    });
    if (sock !== null) break;
    const early = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 50))]);
    if (early) throw new Error(`the runner host exited (${JSON.stringify(early)}); see ${log}`);
    if (Date.now() > deadline) throw new Error(`the runner host did not answer on ${socket}; see ${log}`);
  }
  const conn = sock;
  conn.on("error", () => {});
  readJsonLines(conn, (v) => {
    if (!Value.Check(HostEvent, v)) throw new Error(`not a host event: ${JSON.stringify(v)}`);
    events.push(v);
    for (const w of [...waiters]) w();
  });
  const client: HostClient = {
    pid, log, events, exited,
    send: (cmd) => writeJsonLine(conn, cmd),
    waitFor: (what, match, timeoutMs = 180_000) => new Promise((resolve, reject) => {
      const check = () => {
        const hit = events.find(match);
        if (hit === undefined) return false;
        waiters.delete(check);
        clearTimeout(timer);
        resolve(hit);
        return true;
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`timed out waiting for ${what}; see ${log}`));
      }, timeoutMs);
      waiters.add(check);
      check();
    }),
    async session(id, registrationToken, serverUrl) {
      client.send({ op: "launch", id, registrationToken, serverUrl, labels: [] });
      const refused = (e: HostEvent): e is Extract<HostEvent, { type: "refused" }> => e.type === "refused" && e.id === id;
      const ended = (e: HostEvent): e is SessionExited => e.type === "session_exited" && e.id === id;
      const got = await client.waitFor(`session ${id}`, (e): e is SessionExited | Extract<HostEvent, { type: "refused" }> => ended(e) || refused(e));
      if (got.type === "refused") throw new Error(`session ${id} refused: ${got.message}`);
      return got;
    },
    async stop(timeoutMs = 60_000) {
      client.send({ op: "retire" });
      const timer = setTimeout(() => void client.kill(), timeoutMs);
      await exited;
      clearTimeout(timer);
      conn.destroy();
    },
    async kill() {
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
      await exited;
      conn.destroy();
    },
  };
  await client.waitFor("hello", (e): e is Extract<HostEvent, { type: "hello" }> => e.type === "hello");
  return client;
}

/**
 * Reaps the slots of a host that did not exit cleanly (a test that failed before `stop()`: the
 * host is killed with a warm sandbox in its slots), as its controller would.
 */
export async function reapHostSlots(o: Pick<HostClientOptions, "workRoot" | "slotBase" | "slots" | "isolation">): Promise<string[]> {
  const logger = { info: () => {}, warn: () => {} };
  const factory = o.isolation === "oci" ? new CrunSandboxFactory({ clock: systemClock, logger, cgroupParent: "deltaci" }) : new ProcessSandboxFactory({ clock: systemClock, logger });
  const reaped: string[] = [];
  for (let i = 0; i < o.slots; i++) reaped.push(...(await factory.reapSlot(slotInfo(o.slotBase + i, o.workRoot))));
  await factory.close();
  return reaped;
}

/** `count` single-use registration tokens from the server's controller API. */
export async function registrationTokens(serverUrl: string, controllerToken: string, count: number): Promise<string[]> {
  const res = await fetch(`${serverUrl}/v1/controller/registrations`, {
    method: "POST", headers: { authorization: `Bearer ${controllerToken}`, "content-type": "application/json" }, body: JSON.stringify({ count, labels: [] }),
  });
  if (res.status !== 201) throw new Error(`registrations: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { tokens: string[] }).tokens;
}
