/**
 * Runs crun with its own state root. On a hybrid cgroup host every crun invocation goes through
 * the helper's `unshare-cgroup2`: a private mount namespace without the cgroup2 mount, which crun
 * 1.8 refuses; the host's mount table is not changed. On pure v1 or v2 hosts crun runs directly.
 */
import { execFile, spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import type { Duplex } from "node:stream";
import { DeltaError } from "../../base/errors.ts";

export interface CrunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class CrunCli {
  constructor(
    private readonly crunPath: string,
    /** crun's `--root`: a state dir only Delta CI uses, so `crun list` shows only our containers. */
    readonly stateRoot: string,
    /** Prefix argv (the hybrid-cgroup wrapper) or empty. */
    private readonly wrapper: string[],
  ) {}

  argv(args: string[]): [string, string[]] {
    const full = [...this.wrapper, this.crunPath, "--root", this.stateRoot, ...args];
    return [full[0] ?? this.crunPath, full.slice(1)];
  }

  /** Runs a crun command to completion; never throws for a non-zero exit. */
  run(args: string[], timeoutMs = 60_000): Promise<CrunResult> {
    const [cmd, rest] = this.argv(args);
    return new Promise((resolve) => {
      execFile(cmd, rest, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === "number" ? err.code : 1;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) || (err && typeof err.code !== "number" ? err.message : "") });
      });
    });
  }

  /** Runs a crun command that must succeed. */
  async must(args: string[], what: string, timeoutMs?: number): Promise<string> {
    const res = await this.run(args, timeoutMs);
    if (res.code !== 0) throw new DeltaError("E_SANDBOX", `${what} failed: crun ${args[0] ?? ""} exited ${res.code}: ${res.stderr.trim()}`);
    return res.stdout;
  }

  /**
   * `crun run -d` with a socketpair passed to the container's init as fd 3 (`--preserve-fds=1`):
   * resolves with the host end once crun has started the container and exited.
   */
  async runDetachedWithChannel(args: string[], what: string, timeoutMs = 60_000): Promise<Duplex> {
    const child = this.spawn(["run", "-d", "--preserve-fds=1", ...args], ["ignore", "ignore", "pipe", "pipe"]);
    const channel = child.stdio[3] as Duplex;
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
      child.once("exit", (c, sig) => resolve(c ?? (sig ? 128 : 1)));
    }).finally(() => clearTimeout(timer));
    if (code !== 0) {
      channel.destroy();
      throw new DeltaError("E_SANDBOX", `${what} failed: crun run exited ${code}: ${stderr.trim()}`);
    }
    return channel;
  }

  spawn(args: string[], stdio: StdioOptions): ChildProcess {
    const [cmd, rest] = this.argv(args);
    return spawn(cmd, rest, { stdio });
  }

  /** Ids of the containers in our state root. */
  async list(): Promise<string[]> {
    const res = await this.run(["list", "-q"]);
    return res.code === 0 ? res.stdout.split("\n").map((l) => l.trim()).filter((l) => l !== "") : [];
  }
}
