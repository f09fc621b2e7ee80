/** One job's crun container: steps run one after another through its init; `dispose` kills the job and leaves the rest to a background teardown. */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { DeltaError } from "../../base/errors.ts";
import type { Clock } from "../../base/clock.ts";
import { assertPassableEnv, baseStepEnv, DEFAULT_PATH, shellArgv, stepCwd } from "../step-command.ts";
import type { LimitReason, Sandbox, SandboxLogger, StepOutput, StepProcess, StepSpec } from "../types.ts";
import type { JobCgroup, LimitCounters } from "./cgroups.ts";
import { encodeStepRequest, type InitChannel } from "./init-channel.ts";
import { startCrunStep } from "./crun-step.ts";
import { diskFull } from "./job-disk.ts";

export const WORKSPACE = "/workspace";
export const HOME = "/home/deltaci";
export const HELPER_IN_SANDBOX = "/.deltaci/bin/sandbox-helper";

/** The file of step `n`'s script (1-based) in the job dir's `steps`, mounted at /.deltaci/steps. */
export const stepScriptName = (n: number): string => `${n}.sh`;

export interface CrunJob {
  jobId: string;
  containerId: string;
  jobDir: string;
  diskMount: string;
  cgroup: JobCgroup;
  uidBase: number;
  hasBash: boolean;
  extraEnv: Record<string, string>;
  limits: { memoryMiB: number; pids: number; diskMiB: number };
}

export interface CrunSandboxDeps {
  /** The control channel to the container's init, which starts the steps. */
  channel: InitChannel;
  clock: Clock;
  logger: SandboxLogger;
  nsLevel: number;
  timeoutGraceMs: number;
  /** Kills the job and moves its files off their path; the rest (container, cgroups, mounts, loop device, files) goes on in the background. Called once. */
  teardown(jobId: string): Promise<void>;
}

export class CrunSandbox implements Sandbox {
  readonly isolation = "oci" as const;
  readonly workspaceInSandbox = WORKSPACE;
  readonly workspaceOnHost: string;
  private stepCount = 0;
  private current: StepProcess | null = null;
  private running: Promise<unknown> | null = null;
  private disposed: Promise<void> | null = null;
  /** The job this sandbox serves: the one it was built for, or the one that took it prewarmed. */
  private servedJobId: string;
  /**
   * The cgroup's limit counters with no step running: read when the container started and after
   * each step's end (its leftovers killed), not on the next step's start, where the two reads
   * took ~0.3 ms on the way to its request (nothing of the job runs in between).
   */
  private idleCounters: LimitCounters;

  constructor(
    private readonly job: CrunJob,
    private readonly deps: CrunSandboxDeps,
  ) {
    this.workspaceOnHost = join(job.diskMount, "workspace");
    this.servedJobId = job.jobId;
    this.idleCounters = job.cgroup.countersNow();
  }

  get jobId(): string {
    return this.servedJobId;
  }

  /**
   * False once its init is gone: the sandbox can run no step. The channel's close is seen only
   * when the event loop polls, so an init that died just before this read is found by its
   * cgroup, which is empty once it exited (a synchronous read of `cgroup.procs`).
   */
  get alive(): boolean {
    return this.disposed === null && this.deps.channel.isOpen && this.job.cgroup.pidsNow().length > 0;
  }

  adopt(jobId: string): void {
    this.servedJobId = jobId;
  }

  start(step: StepSpec, output: StepOutput): StepProcess {
    if (this.disposed) throw new DeltaError("E_SANDBOX", "sandbox is disposed");
    if (this.running) throw new DeltaError("E_SANDBOX", "a step is already running");
    const n = ++this.stepCount;
    const cwd = stepCwd(WORKSPACE, step.workingDirectory);
    const stepsDir = join(this.job.jobDir, "steps");
    // truncates the first step's file made with the job dir (crun-build.ts), else creates it
    writeFileSync(join(stepsDir, stepScriptName(n)), step.run, { mode: 0o644 });
    const env = { ...baseStepEnv(WORKSPACE, HOME, DEFAULT_PATH), ...this.job.extraEnv, ...step.env };
    assertPassableEnv(env);
    const request = { cwd, argv: shellArgv(step, `/.deltaci/steps/${stepScriptName(n)}`, this.job.hasBash), env };
    encodeStepRequest(request); // a bad step (a NUL byte, too large) is refused here, synchronously
    const proc = startCrunStep(
      {
        channel: this.deps.channel,
        cgroup: this.job.cgroup,
        clock: this.deps.clock,
        nsLevel: this.deps.nsLevel,
        timeoutGraceMs: this.deps.timeoutGraceMs,
        explain: (before, after) => this.explain(before, after),
      },
      request,
      step.timeoutMs,
      output,
      this.idleCounters,
    );
    this.current = proc;
    // Runs before the caller's own reaction to `done` (registered first): the next start sees it.
    this.running = proc.done
      .finally(() => {
        this.current = null;
        this.running = null;
        this.idleCounters = this.job.cgroup.countersNow();
      })
      .catch(() => {}); // the caller gets done's rejection; this copy only tracks the step
    return proc;
  }

  private async explain(before: LimitCounters, after: LimitCounters): Promise<{ reason: LimitReason; message: string } | null> {
    const l = this.job.limits;
    if (after.oomKills > before.oomKills) return { reason: "memory_limit", message: `memory limit of ${l.memoryMiB} MiB exceeded` };
    if (after.pidsMax > before.pidsMax) return { reason: "pids_limit", message: `process limit of ${l.pids} exceeded` };
    if (await diskFull(this.job.diskMount)) return { reason: "disk_quota", message: `disk quota of ${l.diskMiB} MiB exceeded` };
    return null;
  }

  dispose(): Promise<void> {
    this.disposed ??= (async () => {
      if (this.current) {
        this.current.stop(0);
        const ac = new AbortController();
        await Promise.race([this.running, this.deps.clock.sleep(15_000, ac.signal).catch(() => {})]).catch(() => {});
        ac.abort();
      }
      await this.deps.teardown(this.jobId);
    })();
    return this.disposed;
  }
}
