/**
 * Runs crun with its own state root. On a hybrid cgroup host every crun invocation runs in a
 * private mount namespace without the cgroup2 mount, which crun 1.8 refuses (the host's mount
 * table is not changed): made by the resident spawner in the child it forks, or by the helper's
 * `unshare-cgroup2` as an extra exec. On pure v1 or v2 hosts crun runs directly.
 */
import { readdir } from "node:fs/promises";
import type { Duplex } from "node:stream";
import { DeltaError } from "../../base/errors.ts";
import { wrappedArgv, type CommandResult, type HiddenMount, type HostCommands } from "./host-commands.ts";

export type CrunResult = CommandResult;

export class CrunCli {
  constructor(
    private readonly crunPath: string,
    /** crun's `--root`: a state dir only Delta CI uses, so `crun list` shows only our containers. */
    readonly stateRoot: string,
    /** The hybrid host's cgroup2 mount, hidden from crun; null elsewhere. */
    private readonly hide: HiddenMount | null,
    /** How the commands are run (the resident spawner, or child_process). */
    private readonly commands: HostCommands,
  ) {}

  /** The argv of a crun command run as a process of its own (through the wrapper on a hybrid host). */
  argv(args: string[]): [string, string[]] {
    return wrappedArgv(this.crunPath, ["--root", this.stateRoot, ...args], this.hide);
  }

  /** Runs a crun command to completion; never throws for a non-zero exit. */
  run(args: string[], timeoutMs = 60_000): Promise<CrunResult> {
    return this.commands.run(this.crunPath, ["--root", this.stateRoot, ...args], timeoutMs, this.hide);
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
    const { code, stderr, channel } = await this.commands.runWithChannel(this.crunPath, ["--root", this.stateRoot, "run", "-d", "--preserve-fds=1", ...args], timeoutMs, read, this.hide);
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
