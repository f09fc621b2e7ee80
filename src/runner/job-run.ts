/**
 * What the phases of one job run share (spool, log, uploader, heartbeat, phase marks, the stop
 * cause) and the wiring of the stop's sources: the heartbeat (cancel, stale or lost lease), the
 * runner's stop signal, and the log limit. Everything here belongs to one run: `openJobRun`
 * makes it, `unwireStopSources` drops the subscriptions to what outlives the run (the runner's
 * signal) and teardown-job.ts releases the rest.
 */
import { mkdirSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { WAIT_CALLED_OFF, type Clock } from "../base/clock.ts";
import { JobLog } from "../logs/job-log.ts";
import { LogSpool } from "../logs/log-spool.ts";
import { LogUploader } from "../logs/log-uploader.ts";
import type { CompleteRequest, Lease } from "../protocol/schemas.ts";
import type { Sandbox, SandboxFactory, SlotInfo } from "../sandbox/types.ts";
import { HeartbeatLoop } from "./heartbeat-loop.ts";
import { JobPhases } from "./job-phases.ts";
import { JobStop } from "./job-stop.ts";
import type { RunnerLogger, RunnerProtocol } from "./ports.ts";

export interface RunJobTimings {
  flushIntervalMs: number;
  flushBytes: number;
  chunkBytes: number;
  cancelGraceMs: number;
  /** How long a stale or lost runner still tries to send its log tail. */
  tailUploadMs: number;
  /** Bound on dispose. */
  disposeMs: number;
}

export interface RunJobDeps {
  client: RunnerProtocol;
  sandboxFactory: SandboxFactory;
  clock: Clock;
  logger: RunnerLogger;
  slot: SlotInfo;
  /** Runner-private dir for this job: spool, staging (not visible to the sandbox). */
  jobDir: string;
  timings: RunJobTimings;
  /** The runner is asked to stop (SIGTERM): steps are stopped with the grace, the job reported as runner_error. */
  signal?: AbortSignal;
}

export type JobReport = "completed" | "canceled" | "stale" | "lost" | "unreported";

export interface RunJobResult {
  report: JobReport;
  result: CompleteRequest | null;
}

/** The phase a run is in; the heartbeat reports it as the job's state. */
export type JobRunPhase = "prepare" | "execute" | "collect" | "report" | "teardown";

export interface JobRun {
  readonly lease: Lease;
  readonly deps: RunJobDeps;
  readonly phases: JobPhases;
  readonly stop: JobStop;
  readonly spool: LogSpool;
  readonly log: JobLog;
  readonly uploader: LogUploader;
  readonly heartbeat: HeartbeatLoop;
  /** Set once by the prepare phase; teardown disposes of it, whatever happened after. */
  sandbox: Sandbox | null;
  /** Read by the heartbeat: the run's phase and the step running now. */
  readonly status: { phase: JobRunPhase; step: number | null };
  /** Drops the subscriptions of the stop's sources (runner signal, spool watch); before the report. */
  unwireStopSources(): void;
  /**
   * Starts the log's upload and the heartbeat, once: now, or with `afterMs` in that many ms
   * unless started before. The run starts them when its first step has been sent, when the
   * preparation outlasts QUIET_PREPARE_MS, and at the latest before its report.
   */
  startTraffic(afterMs?: number): void;
}

/**
 * How long a preparation may go on before the heartbeat and the log upload start without waiting
 * for the first step. A job that takes a prewarmed sandbox sends its first step 2–4 ms after the
 * lease, and its first heartbeat (then "running", not "preparing" then woken) and log PUT go
 * after that step's request instead of before it: on a loaded host they took the runner's and
 * the server's CPU from the step's start. A longer preparation (a cold sandbox, a source
 * download, an image pull) starts them soon, so that the server handles them while it goes on
 * rather than beside the first step (with 100 ms here, cold pickups were ~4 ms slower).
 */
const QUIET_PREPARE_MS = 10;

const stateOf = (p: JobRunPhase) => (p === "prepare" ? "preparing" : p === "execute" ? "running" : "finishing");

/** The spool's file in the job dir. */
const SPOOL_FILE = "log.spool";

/**
 * Makes the job dir and an empty spool file ahead of a lease (the runner, while it registers
 * and waits), so that `openJobRun` opens them and allocates no inode on the lease-to-step path:
 * on a busy ext4 an inode allocation took 0.5–1 ms of CPU (docs/runner.md). Never rejects
 * (`openJobRun` makes what is missing).
 */
export async function prepareJobDir(jobDir: string): Promise<void> {
  try {
    await mkdir(jobDir, { recursive: true, mode: 0o700 });
    await writeFile(join(jobDir, SPOOL_FILE), "", { mode: 0o600 });
  } catch {}
}

/** Makes the job dir, the spool and everything on it (or opens what `prepareJobDir` made); starts nothing (see `startJobRun`). */
export async function openJobRun(lease: Lease, deps: RunJobDeps): Promise<JobRun> {
  const { client, clock, logger, timings } = deps;
  const job = lease.job;
  const phases = new JobPhases(clock);
  // Synchronous: one mkdir, cheaper than a thread-pool round trip on the lease-to-step path.
  mkdirSync(deps.jobDir, { recursive: true, mode: 0o700 });
  phases.mark("jobDir");
  let spool: LogSpool;
  try {
    spool = new LogSpool(join(deps.jobDir, SPOOL_FILE), job.limits.logMiB * 1024 * 1024);
  } catch (err) {
    await rm(deps.jobDir, { recursive: true, force: true });
    throw err;
  }
  const log = new JobLog(spool, Object.values(job.secrets));
  const stop = new JobStop();
  const status: JobRun["status"] = { phase: "prepare", step: null };
  const uploader = new LogUploader({
    spool, clock, flushIntervalMs: timings.flushIntervalMs, flushBytes: timings.flushBytes, chunkBytes: timings.chunkBytes,
    sink: {
      put: async (start, bytes, signal) => {
        const res = await client.putLog(lease.leaseToken, start, bytes, { signal, maxAttempts: 4 });
        phases.mark("firstLogPut");
        return res;
      },
    },
  });
  const heartbeat = new HeartbeatLoop({
    client: {
      heartbeat: async (t, b, o) => {
        const res = await client.heartbeat(t, b, o);
        phases.mark("firstHeartbeat");
        return res;
      },
    },
    leaseToken: lease.leaseToken, clock, logger, ttlMs: lease.ttlMs, heartbeatIntervalMs: lease.heartbeatIntervalMs,
    status: () => ({ state: stateOf(status.phase), step: status.step, logBytes: uploader.committed }),
    onCancel: (mode) => stop.raise({ kind: "cancel", mode }),
    onLeaseEnd: (why) => stop.raise({ kind: "lease_ended", why }),
  });

  // What a cause writes to the job's log, until the sources are unwired (job-end is the last marker).
  const offNotices = stop.onRaise((c) => {
    if (c.kind === "cancel") {
      logger.info({ jobId: lease.jobId, mode: c.mode }, "cancel requested");
      log.notice(`cancel requested (${c.mode})`);
    } else if (c.kind === "runner_stopping") {
      log.notice("the runner was asked to stop");
    }
  });
  const onRunnerStop = () => stop.raise({ kind: "runner_stopping" });
  deps.signal?.addEventListener("abort", onRunnerStop, { once: true });
  const unwatchSpool = spool.onAppend(() => {
    if (spool.truncated || uploader.stopped === "limit") stop.raise({ kind: "log_limit" });
  });
  const quiet = new AbortController();
  let trafficStarted = false;
  const startTraffic = (afterMs = 0) => {
    if (trafficStarted) return;
    if (afterMs > 0) {
      clock.sleep(afterMs, quiet.signal).then(() => startTraffic(), () => {});
      return;
    }
    trafficStarted = true;
    quiet.abort(WAIT_CALLED_OFF); // its timer, if one was armed
    uploader.start();
    heartbeat.start();
  };
  return {
    lease, deps, phases, stop, spool, log, uploader, heartbeat, status, sandbox: null,
    unwireStopSources: () => {
      unwatchSpool();
      deps.signal?.removeEventListener("abort", onRunnerStop);
      offNotices();
    },
    startTraffic,
  };
}

/**
 * Starts the log (first marker) and arms the start of its upload and of the heartbeat (see
 * QUIET_PREPARE_MS); a runner already stopping stops the run at once.
 */
export function startJobRun(run: JobRun): void {
  const { lease } = run;
  run.log.start({ jobId: lease.jobId, runId: lease.runId, attempt: lease.attempt, job: lease.job.name });
  run.startTraffic(QUIET_PREPARE_MS);
  run.phases.mark("logStarted");
  if (run.deps.signal?.aborted) run.stop.raise({ kind: "runner_stopping" });
}
