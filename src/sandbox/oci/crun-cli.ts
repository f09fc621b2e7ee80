/**
 * Runs crun with its own state root. On a hybrid cgroup host every crun invocation goes through
 * the helper's `unshare-cgroup2`: a private mount namespace without the cgroup2 mount, which crun
 * 1.8 refuses; the host's mount table is not changed. On pure v1 or v2 hosts crun runs directly.
 */
import { readdir } from "node:fs/promises";
import type { Duplex } from "node:stream";
import { DeltaError } from "../../base/errors.ts";
import type { CommandResult, HostCommands } from "./host-commands.ts";

export type CrunResult = CommandResult;

export class CrunCli {
  constructor(
    private readonly crunPath: string,
    /** crun's `--root`: a state dir only Delta CI uses, so `crun list` shows only our containers. */
    readonly stateRoot: string,
    /** Prefix argv (the hybrid-cgroup wrapper) or empty. */
    private readonly wrapper: string[],
    /** How the commands are run (the resident spawner, or child_process). */
    private readonly commands: HostCommands,
  ) {}

  argv(args: string[]): [string, string[]] {
    const full = [...this.wrapper, this.crunPath, "--root", this.stateRoot, ...args];
    return [full[0] ?? this.crunPath, full.slice(1)];
  }

  /** Runs a crun command to completion; never throws for a non-zero exit. */
  run(args: string[], timeoutMs = 60_000): Promise<CrunResult> {
    const [cmd, rest] = this.argv(args);
    return this.commands.run(cmd, rest, timeoutMs);
  }

  /** Runs a crun command that must succeed. */
  async must(args: string[], what: string, timeoutMs?: number): Promise<string> {
    const res = await this.run(args, timeoutMs);
    if (res.code !== 0) throw new DeltaError("E_SANDBOX", `${what} failed: crun ${args[0] ?? ""} exited ${res.code}: ${res.stderr.trim()}`);
    return res.stdout;
  }

  /**
   * `crun run -d` with a stream passed to the container's init as fd 3 (`--preserve-fds=1`):
   * resolves with the host end once crun has started the container and exited. The end's reads
   * go to `read` (see HostCommands.runWithChannel).
   */
  async runDetachedWithChannel(args: string[], what: string, read: (chunk: Buffer) => void, timeoutMs = 60_000): Promise<Duplex> {
    const [cmd, rest] = this.argv(["run", "-d", "--preserve-fds=1", ...args]);
    const { code, stderr, channel } = await this.commands.runWithChannel(cmd, rest, timeoutMs, read);
    if (code !== 0) throw new DeltaError("E_SANDBOX", `${what} failed: crun run exited ${code}: ${stderr.trim()}`);
    return channel;
  }

  /**
   * Ids of the containers in our state root: its directories, read directly. `crun list` reads
   * the same directory, but costs two process starts (crun, and the hybrid-cgroup wrapper), about
   * 15 ms on each slot reap of `deltaci run`'s start. A directory crun left without its status
   * file (a crash mid-create) is listed too, so a reap tries to remove it.
   */
  async list(): Promise<string[]> {
    const entries = await readdir(this.stateRoot, { withFileTypes: true }).catch(() => []);
    return entries.filter((e) => e.isDirectory() && !e.name.startsWith(".")).map((e) => e.name).sort();
  }
}
