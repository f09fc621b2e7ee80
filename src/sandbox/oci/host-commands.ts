/**
 * How the sandbox layer runs host commands (crun, the disk tool). `DirectCommands` forks the node
 * process for each (child_process); `ResidentSpawner` (resident-spawner.ts) asks a small resident
 * process to do it, so the big host never forks. Both never throw for a non-zero exit.
 */
import { execFile, spawn } from "node:child_process";
import type { Duplex } from "node:stream";

export interface CommandResult {
  /** The exit code; 128 + signal when killed (a timeout of `run` sends SIGTERM, of `runWithChannel` SIGKILL). */
  code: number;
  stdout: string;
  stderr: string;
}

export interface ChannelResult {
  code: number;
  stderr: string;
  /** The host end of the stream that was the command's fd 3 (its reads go to the `read` given); destroyed when `code` is not 0. */
  channel: Duplex;
}

/**
 * Run a command in a private mount namespace without the mount at `dir` (a hybrid cgroup host's
 * cgroup2 mount, which crun 1.8 refuses; the host's mount table is not changed), its binary
 * bind-mounted read-only over itself. `wrapper` is the argv prefix that does it as a separate
 * exec (sandbox-helper's `unshare-cgroup2`), for a runner that cannot do it in its own fork.
 */
export interface HiddenMount {
  dir: string;
  wrapper: string[];
}

export interface HostCommands {
  /** Runs to completion, stdin empty, stdout and stderr collected. */
  run(file: string, args: string[], timeoutMs: number, hide?: HiddenMount | null): Promise<CommandResult>;
  /**
   * Runs a command that detaches (`crun run -d`) with a fresh stream as its fd 3; resolves once it
   * exited. What the stream reads goes to `read`, synchronously; the chunk may be a view of a
   * buffer reused for the next read (it emits no 'data').
   */
  runWithChannel(file: string, args: string[], timeoutMs: number, read: (chunk: Buffer) => void, hide?: HiddenMount | null): Promise<ChannelResult>;
  /** Stops what `run` needs (if anything); a later call starts it again. */
  close(): Promise<void>;
}

/** A host command bound to its binary (the disk tool). */
export interface HostTool {
  readonly path: string;
  run(args: string[], timeoutMs?: number): Promise<CommandResult>;
}

export function hostTool(commands: HostCommands, path: string): HostTool {
  return { path, run: (args, timeoutMs = 60_000) => commands.run(path, args, timeoutMs) };
}

const SIGNALS: Record<string, number> = { SIGKILL: 9, SIGTERM: 15 };

/** The argv that runs `file args` as a separate process would: through the wrapper when a mount is hidden. */
export function wrappedArgv(file: string, args: string[], hide: HiddenMount | null | undefined): [string, string[]] {
  const full = [...(hide?.wrapper ?? []), file, ...args];
  return [full[0] ?? file, full.slice(1)];
}

export class DirectCommands implements HostCommands {
  run(file: string, args: string[], timeoutMs: number, hide?: HiddenMount | null): Promise<CommandResult> {
    const [cmd, argv] = wrappedArgv(file, args, hide);
    return new Promise((resolve) => {
      execFile(cmd, argv, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === "number" ? err.code : err.signal ? 128 + (SIGNALS[err.signal] ?? 1) : 127;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) || (err && typeof err.code !== "number" ? err.message : "") });
      });
    });
  }

  async runWithChannel(file: string, args: string[], timeoutMs: number, read: (chunk: Buffer) => void, hide?: HiddenMount | null): Promise<ChannelResult> {
    const [cmd, argv] = wrappedArgv(file, args, hide);
    const child = spawn(cmd, argv, { stdio: ["ignore", "ignore", "pipe", "pipe"] });
    const channel = child.stdio[3] as Duplex;
    channel.on("data", read); // a fresh buffer per read here: the fallback when no spawner runs
    let stderr = "";
    child.stderr?.setEncoding("utf8").on("data", (d: string) => {
      if (stderr.length < 64 * 1024) stderr += d;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    const code = await new Promise<number>((resolve) => {
      child.once("error", (err) => {
        stderr += err.message;
        resolve(127);
      });
      child.once("exit", (c, sig) => resolve(c ?? (sig ? 128 + (SIGNALS[sig] ?? 1) : 1)));
    }).finally(() => clearTimeout(timer));
    if (code !== 0) channel.destroy();
    return { code, stderr, channel };
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
