/**
 * The `process` backend: NO ISOLATION, for development only. It is chosen only explicitly and
 * warns every time it is created. It still gives each job its own workspace, runs each step as a
 * process group (killed as a whole on stop, timeout and exit), and removes the workspace on dispose.
 * A process that leaves the group (setsid) escapes it: one more reason not to run untrusted code.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DeltaError } from "../../base/errors.ts";
import type { Clock } from "../../base/clock.ts";
import { extractSourceArchive } from "../source-archive.ts";
import { assertPassableEnv, baseStepEnv, DEFAULT_PATH, shellArgv, stepCwd } from "../step-command.ts";
import { StepControl } from "../step-control.ts";
import { STEP_READ_BUFFER_BYTES, type Sandbox, type SandboxFactory, type SandboxLogger, type SandboxSpec, type SlotInfo, type StepOutput, type StepProcess, type StepResult, type StepSpec } from "../types.ts";
import { openOutputSocket } from "./output-socket.ts";
import { isJobDirName, jobDirName } from "../job-names.ts";
import { SlotLedger } from "../slot-ledger.ts";

export interface ProcessSandboxOptions {
  clock: Clock;
  logger: SandboxLogger;
  /** Grace between SIGTERM and SIGKILL when a step times out. */
  timeoutGraceMs?: number;
}

export class ProcessSandboxFactory implements SandboxFactory {
  readonly isolation = "process" as const;
  /** Slots this factory vouches for (its dispose removes everything before it resolves: nothing runs in the background). */
  private readonly ledger = new SlotLedger();
  constructor(private readonly opts: ProcessSandboxOptions) {}

  async create(spec: SandboxSpec): Promise<Sandbox> {
    this.opts.logger.warn({ jobId: spec.jobId, isolation: "process" }, "sandbox backend 'process' gives NO isolation: development only, never for untrusted jobs");
    const jobDir = join(spec.slot.workDir, jobDirName(spec.jobId));
    const workspace = join(jobDir, "workspace");
    try {
      await rm(jobDir, { recursive: true, force: true });
      await mkdir(workspace, { recursive: true });
      await mkdir(join(jobDir, "home"));
      await mkdir(join(jobDir, "steps"));
      if (spec.sourceArchive !== null) await extractSourceArchive(spec.sourceArchive, workspace, { owner: null });
    } catch (e) {
      await rm(jobDir, { recursive: true, force: true });
      if (e instanceof DeltaError) throw e;
      throw new DeltaError("E_SANDBOX", `cannot prepare process sandbox: ${String(e)}`, { cause: e });
    }
    return new ProcessSandbox(jobDir, workspace, this.opts, () => this.ledger.markDirty(spec.slot.index));
  }

  /** Nothing to build ahead: a process sandbox is a directory. */
  prewarm(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  isSlotClean(slot: SlotInfo): boolean {
    return this.ledger.isClean(slot.index);
  }

  settle(): Promise<void> {
    return Promise.resolve();
  }

  /** Removes job dirs only: the slot dir also holds the runner's own files. */
  async reapSlot(slot: SlotInfo): Promise<string[]> {
    const removed: string[] = [];
    for (const name of await readdir(slot.workDir).catch(() => [])) {
      if (!isJobDirName(name)) continue;
      await rm(join(slot.workDir, name), { recursive: true, force: true });
      removed.push(join(slot.workDir, name));
    }
    this.ledger.vouch(slot.index);
    return removed;
  }
}

class ProcessSandbox implements Sandbox {
  readonly isolation = "process" as const;
  private stepCount = 0;
  private running: Promise<StepResult> | null = null;
  private current: StepProcess | null = null;
  private disposed: Promise<void> | null = null;

  constructor(
    private readonly jobDir: string,
    readonly workspaceOnHost: string,
    private readonly opts: ProcessSandboxOptions,
    private readonly onDisposeFailed: () => void,
  ) {}

  get workspaceInSandbox(): string {
    return this.workspaceOnHost;
  }

  start(step: StepSpec, output: StepOutput): StepProcess {
    if (this.disposed) throw new DeltaError("E_SANDBOX", "sandbox is disposed");
    if (this.running) throw new DeltaError("E_SANDBOX", "a step is already running");
    const script = join(this.jobDir, "steps", `${++this.stepCount}.sh`);
    const cwd = stepCwd(this.workspaceOnHost, step.workingDirectory);
    const argv = shellArgv(step, script, existsSync("/bin/bash"));
    const env = { ...baseStepEnv(this.workspaceOnHost, join(this.jobDir, "home"), DEFAULT_PATH), ...step.env };
    assertPassableEnv(env);
    const proc = startProcessStep(argv, cwd, env, script, step, output, this.opts);
    this.current = proc;
    this.running = proc.done.finally(() => {
      this.running = null;
      this.current = null;
    });
    return proc;
  }

  dispose(): Promise<void> {
    this.disposed ??= (async () => {
      this.current?.stop(0);
      await this.running?.catch(() => {});
      await rm(this.jobDir, { recursive: true, force: true }).catch((e: unknown) => {
        this.onDisposeFailed();
        throw e;
      });
    })();
    return this.disposed;
  }
}

function groupAlive(pgid: number): boolean {
  if (pgid <= 0) return false;
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

function startProcessStep(argv: string[], cwd: string, env: Record<string, string>, script: string, step: StepSpec, output: StepOutput, opts: ProcessSandboxOptions): StepProcess {
  let pgid = 0;
  const signalGroup = (sig: NodeJS.Signals) => {
    if (pgid > 0) try {
      process.kill(-pgid, sig);
    } catch {}
  };
  const control = new StepControl(opts.clock, { terminate: () => signalGroup("SIGTERM"), kill: () => signalGroup("SIGKILL") }, step.timeoutMs, opts.timeoutGraceMs ?? 2000);
  const started = opts.clock.now();
  const done = (async (): Promise<StepResult> => {
    await writeFile(script, step.run, { mode: 0o700 });
    if (!existsSync(cwd)) await mkdir(cwd, { recursive: true });
    // One read buffer for both streams: their reads are handed over one at a time.
    const buffer = Buffer.allocUnsafe(STEP_READ_BUFFER_BYTES);
    const out = await openOutputSocket(buffer, (c) => output.stdout(c));
    const err = await openOutputSocket(buffer, (c) => output.stderr(c)).catch((e: unknown) => {
      out.child.destroy();
      out.destroy();
      throw e;
    });
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
      try {
        const child = spawn(argv[0] ?? "sh", argv.slice(1), { cwd, env, detached: true, stdio: ["ignore", out.child, err.child] });
        pgid = child.pid ?? 0;
        child.once("exit", (code, signal) => resolve({ code, signal }));
        child.once("error", (e) => {
          output.stderr(Buffer.from(`deltaci: cannot start step: ${e.message}\n`));
          resolve({ code: 127, signal: null });
        });
      } finally {
        out.child.destroy(); // the step holds its own copies
        err.child.destroy();
      }
    });
    if (control.stopped || control.timedOut) signalGroup("SIGKILL");
    const res = await exited;
    signalGroup("SIGKILL");
    // `done` means the group is gone, not just signalled: wait (bounded) until it no longer exists.
    for (let i = 0; i < 1000 && groupAlive(pgid); i++) await opts.clock.sleep(5);
    // A process that left the group may still hold the streams: stop waiting for it after a while.
    const closeWait = new AbortController();
    await Promise.race([Promise.all([out.ended, err.ended]), opts.clock.sleep(5000, closeWait.signal).then(() => {
      out.destroy();
      err.destroy();
    }, () => {})]);
    closeWait.abort();
    control.finish();
    const limit = control.timedOut ? { reason: "timeout" as const, message: `step timeout of ${step.timeoutMs} ms exceeded` } : null;
    return { exitCode: res.code, signal: res.signal, durationMs: opts.clock.now() - started, limit, stopped: control.stopped };
  })();
  return { done, stop: (graceMs: number) => control.stop(graceMs) };
}
