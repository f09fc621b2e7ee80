/**
 * A resident spawner (native/spawner.c): one small process, started on first use, that forks and
 * execs host commands on request over a unix socket in a private 0700 temp dir (not mounted into
 * any sandbox). Forking the ~100 MB node host for each crun or disk tool run cost most of the
 * host's kernel time per job. The spawner dies with the host (PR_SET_PDEATHSIG and EOF on its
 * stdin) and removes its socket and dir. If it cannot start, commands run directly (child_process).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { lstatSync, mkdtempSync, readdirSync, rmdirSync, rmSync, unlinkSync } from "node:fs";
import { createConnection, type OnReadOpts, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { STEP_READ_BUFFER_BYTES, type SandboxLogger } from "../types.ts";
import { DirectCommands, type ChannelResult, type CommandResult, type HiddenMount, type HostCommands } from "./host-commands.ts";

const START_TIMEOUT_MS = 10_000;
/** sockaddr_un's path limit, with room for "/s". */
const MAX_DIR_CHARS = 100;

/** Connections kept open for the next request (the spawner keeps up to 32 idle, IDLE_MAX). */
const IDLE_CONNECTIONS = 8;

interface Running {
  child: ChildProcess;
  dir: string;
  socketPath: string;
  /** Connections whose last reply came in full: reused for the next request (a connect each cost more than the command's reply). */
  idle: Socket[];
  /** Removes `dir`; also run when this process exits, so a spawner killed outright leaves nothing behind. */
  removeDir: () => void;
}

function request(fields: string[]): Buffer {
  const body = Buffer.from(fields.map((f) => `${f}\0`).join(""), "utf8");
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}

/**
 * A request's fields up to the command's argv: "R/DIR" runs the command in a private mount
 * namespace without the mount at /DIR (spawner.c, no wrapper exec); "+R" names a built-in tool
 * that does the command's work in the spawner's child (no exec).
 */
function head(k: "R" | "D", token: string, builtin: string | undefined, hide: HiddenMount | null): string[] {
  const kind = hide === null ? k : `${k}${hide.dir}`;
  return builtin === undefined ? [kind, token] : [`+${kind}`, token, builtin];
}

/** Parses a reply (pid, code, stdout, stderr); null while incomplete. */
function parseReply(buf: Buffer): { code: number; stdout: string; stderr: string } | null {
  if (buf.length < 12) return null;
  const code = buf.readInt32BE(4);
  const outLen = buf.readUInt32BE(8);
  if (buf.length < 16 + outLen) return null;
  const errLen = buf.readUInt32BE(12 + outLen);
  if (buf.length < 16 + outLen + errLen) return null;
  return { code, stdout: buf.toString("utf8", 12, 12 + outLen), stderr: buf.toString("utf8", 16 + outLen, 16 + outLen + errLen) };
}

const DIR_PREFIX = "deltaci-spawner-";
/** `deltaci-spawner-<host pid>-<random>`. */
const DIR_NAME = /^deltaci-spawner-(\d+)-/;

/**
 * Removes the socket dirs of spawners whose host is gone. A spawner removes its dir when its host
 * dies (the parent-death SIGTERM), and the host removes it at exit; only a SIGKILL of both (an
 * operator's `kill -9`, the OOM killer) leaves it. A dir whose pid is alive is kept: it may be a
 * live host's, or its pid was reused (then it stays, empty but for a dead socket).
 */
export function removeDeadHostsDirs(root: string): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return removed;
  }
  const uid = process.geteuid?.() ?? -1;
  for (const name of names) {
    const m = DIR_NAME.exec(name);
    const pid = Number(m?.[1]);
    if (!m || pid === process.pid || pidAlive(pid)) continue;
    // Anyone may make such a name in /tmp: only a real 0700 dir of ours, holding at most the
    // socket, is removed (its one entry, then the dir; never a recursive rm that a swapped-in
    // symlink could lead elsewhere).
    const dir = join(root, name);
    try {
      const st = lstatSync(dir);
      if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o777) !== 0o700) continue;
      const inside = readdirSync(dir);
      if (inside.some((n) => n !== "s")) continue;
      if (inside.length > 0) unlinkSync(join(dir, "s"));
      rmdirSync(dir);
      removed.push(name);
    } catch {
      // gone meanwhile, or not ours to remove
    }
  }
  return removed;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== "ESRCH";
  }
}

export class ResidentSpawner implements HostCommands {
  private running: Promise<Running | null> | null = null;
  private readonly direct = new DirectCommands();
  private failed = false;

  constructor(
    /** The built spawner binary (native-tools.ts). */
    private readonly path: string,
    private readonly logger: SandboxLogger,
    /**
     * Binaries whose work the spawner has built in (path → its name there: the disk tool's, and
     * crun's when it links libcrun): it runs them in the child it forks, without an exec. The
     * binary runs when the spawner cannot, or (crun) when the built-in does not take the command.
     */
    private readonly builtins: ReadonlyMap<string, string> = new Map(),
  ) {}

  async run(file: string, args: string[], timeoutMs: number, hide: HiddenMount | null = null): Promise<CommandResult> {
    const r = await this.ensure();
    if (r === null) return this.direct.run(file, args, timeoutMs, hide);
    const req = request([...head("R", "", this.builtins.get(file), hide), file, ...args]);
    const reply = await this.call(r, req, timeoutMs, "SIGTERM");
    return reply ?? this.direct.run(file, args, timeoutMs, hide);
  }

  async runWithChannel(file: string, args: string[], timeoutMs: number, read: (chunk: Buffer) => void, hide: HiddenMount | null = null): Promise<ChannelResult> {
    const r = await this.ensure();
    if (r === null) return this.direct.runWithChannel(file, args, timeoutMs, read, hide);
    const token = randomBytes(12).toString("hex");
    // Read into one buffer per channel, reused for every read (a step's output flows through it).
    const buffer = Buffer.allocUnsafe(STEP_READ_BUFFER_BYTES);
    const channel = await this.connect(r.socketPath, { buffer, callback: (n) => (read(buffer.subarray(0, n)), true) }).catch(() => null);
    if (channel === null) return this.direct.runWithChannel(file, args, timeoutMs, read, hide);
    channel.on("error", () => {}); // the channel's owner (InitChannel) sees its close
    // registered before the run request: the spawner reads each connection's request in accept order
    await new Promise<void>((resolve) => channel.write(request(["C", token]), () => resolve()));
    const reply = await this.call(r, request([...head("D", token, this.builtins.get(file), hide), file, ...args]), timeoutMs, "SIGKILL");
    if (reply === null || reply.code !== 0) channel.destroy();
    return reply === null ? { code: 1, stderr: "the spawner went away", channel } : { code: reply.code, stderr: reply.stderr, channel };
  }

  /** Ends the spawner (EOF on its stdin) and waits for it; a later command starts a new one. */
  async close(): Promise<void> {
    const r = await this.running?.catch(() => null);
    this.running = null;
    if (r === null || r === undefined) return;
    const gone = r.child.exitCode !== null || r.child.signalCode !== null ? Promise.resolve() : new Promise<void>((resolve) => r.child.once("exit", () => resolve()));
    for (const s of r.idle.splice(0)) s.destroy();
    r.child.stdin?.end();
    const timer = setTimeout(() => r.child.kill("SIGKILL"), 2_000);
    await gone.finally(() => clearTimeout(timer));
    r.removeDir();
  }

  private ensure(): Promise<Running | null> {
    if (this.failed) return Promise.resolve(null);
    this.running ??= this.start().catch((e: unknown) => {
      this.failed = true;
      this.logger.warn({ err: String(e) }, "the resident spawner did not start: host commands fork the host");
      return null;
    });
    return this.running;
  }

  private async start(): Promise<Running> {
    removeDeadHostsDirs(tmpdir());
    // The host's pid in the name: a later host can tell a dir whose host and spawner both died.
    const dir = mkdtempSync(join(tmpdir(), `${DIR_PREFIX}${process.pid}-`)); // 0700
    // The spawner removes its dir when it ends, but not when it is SIGKILLed (a slot reaper racing
    // its exit did that): this process removes it too, at the latest when it exits.
    const removeDir = () => rmSync(dir, { recursive: true, force: true });
    process.once("exit", removeDir);
    const forget = () => {
      removeDir();
      process.off("exit", removeDir);
    };
    if (dir.length > MAX_DIR_CHARS) {
      forget();
      throw new Error(`socket dir path too long: ${dir}`);
    }
    const child = spawn(this.path, [dir], { stdio: ["pipe", "pipe", "inherit"] });
    let timer: NodeJS.Timeout | undefined;
    const ready = await new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), START_TIMEOUT_MS);
      child.once("error", () => resolve(false));
      child.once("exit", () => resolve(false));
      child.stdout?.once("data", (d: Buffer) => resolve(d.toString() === "ready\n"));
      child.stdin?.on("error", () => {});
    }).finally(() => clearTimeout(timer));
    if (!ready) {
      child.kill("SIGKILL");
      forget();
      throw new Error("it did not say ready");
    }
    child.stdout?.destroy();
    // the host may exit with the spawner still there: its stdin's EOF ends it then
    child.unref();
    (child.stdin as Socket | null)?.unref();
    const running: Running = { child, dir, socketPath: join(dir, "s"), idle: [], removeDir: forget };
    child.once("exit", (code, sig) => {
      if (this.running !== null) this.logger.warn({ code, sig }, "the resident spawner exited; the next command starts a new one");
      this.running = null;
      forget();
    });
    return running;
  }

  private connect(socketPath: string, onread?: OnReadOpts): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const s = createConnection(onread ? { path: socketPath, onread } : { path: socketPath });
      s.once("connect", () => {
        s.off("error", reject);
        resolve(s);
      });
      s.once("error", reject);
    });
  }

  /** An idle connection to the spawner, or a new one; null if it could not be reached. */
  private async connection(r: Running): Promise<Socket | null> {
    for (let s = r.idle.pop(); s !== undefined; s = r.idle.pop()) {
      if (!s.destroyed && s.readyState === "open") {
        s.ref();
        return s;
      }
    }
    const s = await this.connect(r.socketPath).catch(() => null);
    if (s === null) return null;
    s.on("error", () => {});
    // once per connection, not per reuse: a kept connection serves many requests
    s.once("close", () => {
      const i = r.idle.indexOf(s);
      if (i >= 0) r.idle.splice(i, 1);
    });
    return s;
  }

  /** Keeps a connection whose reply came in full for the next request (unreferenced: it keeps no process alive). */
  private keep(r: Running, s: Socket): void {
    if (this.running === null || r.idle.length >= IDLE_CONNECTIONS || s.destroyed) {
      s.destroy();
      return;
    }
    s.unref();
    r.idle.push(s);
  }

  /** Sends one request and reads its reply; null if the spawner could not be reached. */
  private async call(r: Running, req: Buffer, timeoutMs: number, killSignal: NodeJS.Signals): Promise<CommandResult | null> {
    const s = await this.connection(r);
    if (s === null) return null;
    return new Promise((resolve) => {
      let got: Buffer = Buffer.alloc(0);
      let pid = 0;
      const timer = setTimeout(() => {
        if (pid > 0) try {
          process.kill(pid, killSignal);
        } catch {}
      }, timeoutMs);
      const done = (reply: CommandResult | null) => {
        clearTimeout(timer);
        s.off("data", onData);
        s.off("close", onClose);
        resolve(reply);
      };
      const onData = (d: Buffer) => {
        got = got.length === 0 ? d : Buffer.concat([got, d]);
        if (pid === 0 && got.length >= 4) pid = got.readInt32BE(0);
        const reply = parseReply(got);
        if (reply === null) return;
        done(reply);
        this.keep(r, s);
      };
      const onClose = () => done(parseReply(got) ?? (pid > 0 ? { code: 1, stdout: "", stderr: "the spawner's reply was cut short" } : null));
      s.on("data", onData);
      s.on("close", onClose);
      s.write(req);
    });
  }
}
