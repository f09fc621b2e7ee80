/**
 * One leased job, lease to report: spool + uploader + heartbeat, source, sandbox, steps,
 * artifacts, complete (or cancel-ack), dispose. Returns whether the control plane accepted the
 * report. Teardown (final log flush, complete, dispose) runs under its own bounded signals.
 */
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Clock } from "../base/clock.ts";
import { isDeltaError } from "../base/errors.ts";
import { uploadArtifacts, type ArtifactOutcome } from "../artifacts/upload-artifacts.ts";
import { JobLog } from "../logs/job-log.ts";
import { LogSpool } from "../logs/log-spool.ts";
import { LogUploader } from "../logs/log-uploader.ts";
import type { CancelMode, CompleteRequest, Failure, Lease } from "../protocol/schemas.ts";
import type { Sandbox, SandboxFactory, SlotInfo } from "../sandbox/types.ts";
import { cloneGitSource } from "./git-source.ts";
import { StepExecutor, type StepsOutcome } from "./execute-steps.ts";
import { HeartbeatLoop, type LeaseEnd } from "./heartbeat-loop.ts";
import type { RunnerLogger, RunnerProtocol } from "./ports.ts";
import { deadlineSignal } from "./deadline.ts";
import { JobPhases } from "./job-phases.ts";

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

const failedResult = (f: Failure | null): CompleteRequest["result"] =>
  f === null ? "succeeded" : ["sandbox_error", "source_error", "runner_error"].includes(f.reason) ? "error" : "failed";

export async function runJob(lease: Lease, deps: RunJobDeps): Promise<RunJobResult> {
  const { client, clock, logger, timings } = deps;
  const token = lease.leaseToken;
  const job = lease.job;
  const phases = new JobPhases(clock);
  await mkdir(deps.jobDir, { recursive: true, mode: 0o700 });
  phases.mark("jobDir");
  const spool = new LogSpool(join(deps.jobDir, "log.spool"), job.limits.logMiB * 1024 * 1024);
  const log = new JobLog(spool, Object.values(job.secrets));
  const leaseAlive = new AbortController();
  /** Aborted only when the server says the lease is stale: the final report's own bound. */
  const leaseStale = new AbortController();
  const uploader = new LogUploader({
    spool, clock, flushIntervalMs: timings.flushIntervalMs, flushBytes: timings.flushBytes, chunkBytes: timings.chunkBytes,
    sink: {
      put: async (start, bytes, signal) => {
        const res = await client.putLog(token, start, bytes, { signal, maxAttempts: 4 });
        phases.mark("firstLogPut");
        return res;
      },
    },
  });
  let state: "preparing" | "running" | "finishing" = "preparing";
  let currentStep: number | null = null;
  // Written by the heartbeat's callbacks at any await: read through the object.
  const flags: { cancel: CancelMode; leaseEnd: LeaseEnd | null } = { cancel: "none", leaseEnd: null };
  let executor: StepExecutor | null = null;
  /** Once the final report started, a failed renewal no longer aborts it (it has its own bound). */
  let reporting = false;
  const prepare = new AbortController();

  const onCancel = (mode: Exclude<CancelMode, "none">) => {
    flags.cancel = mode;
    logger.info({ jobId: lease.jobId, mode }, "cancel requested");
    log.notice(`cancel requested (${mode})`);
    prepare.abort(new Error("canceled"));
    executor?.stop("canceled", mode === "hard" ? 0 : timings.cancelGraceMs, `canceled (${mode})`);
  };
  const heartbeat = new HeartbeatLoop({
    client: {
      heartbeat: async (t, b, o) => {
        const res = await client.heartbeat(t, b, o);
        phases.mark("firstHeartbeat");
        return res;
      },
    },
    leaseToken: token, clock, logger, ttlMs: lease.ttlMs, heartbeatIntervalMs: lease.heartbeatIntervalMs,
    status: () => ({ state, step: currentStep, logBytes: uploader.committed }),
    onCancel,
    onLeaseEnd: (why) => {
      if (why === "stale") leaseStale.abort(new Error("lease stale"));
      if (reporting) return;
      flags.leaseEnd = why;
      leaseAlive.abort(new Error(`lease ${why}`));
      prepare.abort(new Error(`lease ${why}`));
      executor?.stop("lease_ended", 0, `lease ${why}`);
    },
  });
  const stopForLogLimit = () => executor?.stop("log_limit", 0, `log limit of ${job.limits.logMiB} MiB reached`);
  const onRunnerStop = () => {
    log.notice("the runner was asked to stop");
    prepare.abort(new Error("runner stopping"));
    executor?.stop("runner_stopped", timings.cancelGraceMs, "the runner was stopped");
  };
  deps.signal?.addEventListener("abort", onRunnerStop, { once: true });
  const unwatchSpool = spool.onAppend(() => {
    if (spool.truncated || uploader.stopped === "limit") stopForLogLimit();
  });

  let sandbox: Sandbox | null = null;
  let outcome: StepsOutcome = { steps: [], failure: null, exitCode: null };
  let artifacts: ArtifactOutcome[] = [];
  try {
    log.start({ jobId: lease.jobId, runId: lease.runId, attempt: lease.attempt, job: job.name });
    uploader.start();
    heartbeat.start();
    phases.mark("logStarted");
    const jobDeadline = clock.now() + job.limits.timeoutMs;

    // Prepare: source, then the sandbox.
    let prepFailure: Failure | null = null;
    let sourceArchive: string | null = null;
    if (job.source.kind === "archive") {
      sourceArchive = join(deps.jobDir, "source.tar");
      try {
        await client.downloadSource(token, sourceArchive, { signal: prepare.signal });
        phases.mark("sourceFetched");
      } catch (err) {
        if (!prepare.signal.aborted) prepFailure = { reason: "source_error", step: null, message: `cannot fetch the source archive: ${(err as Error).message}` };
      }
    }
    if (prepFailure === null && !prepare.signal.aborted) {
      try {
        sandbox = await deps.sandboxFactory.create({
          jobId: lease.jobId, slot: deps.slot, image: job.image, limits: job.limits, network: job.network, sourceArchive,
          caches: job.caches, auditLogPath: join(deps.jobDir, "network-audit.jsonl"),
          // Writable caches that hold any of these are not saved (caches never carry secrets).
          secretValues: Object.values(job.secrets),
        }, prepare.signal);
        phases.mark("sandboxCreated");
      } catch (err) {
        if (!prepare.signal.aborted) {
          prepFailure = { reason: isDeltaError(err, "E_SOURCE") ? "source_error" : "sandbox_error", step: null, message: (err as Error).message };
        }
      }
    }
    if (sourceArchive) await rm(sourceArchive, { force: true });
    if (prepFailure === null && sandbox !== null && job.source.kind === "git" && !prepare.signal.aborted) {
      prepFailure = await cloneGitSource(sandbox, job.source, log, Math.max(1, jobDeadline - clock.now()));
      phases.mark("gitSource");
    }

    if (prepFailure !== null) {
      log.notice(prepFailure.message);
      outcome = { steps: job.steps.map((s) => ({ name: s.name, exitCode: null, signal: null, startedAt: null, finishedAt: null })), failure: prepFailure, exitCode: null };
    } else if (sandbox !== null) {
      state = "running";
      let stepped = false;
      executor = new StepExecutor({ sandbox, lease, log, clock, jobDeadline, onStep: (i) => {
        currentStep = i;
        if (i === null || stepped) return;
        stepped = true;
        heartbeat.wake(); // the job shows running now, not after the preparing hold
        phases.mark("firstStepStarted");
        logger.info({ jobId: lease.jobId, phases: phases.snapshot() }, "first step started");
      } });
      if (flags.cancel !== "none") executor.stop("canceled", 0, `canceled (${flags.cancel})`);
      if (flags.leaseEnd !== null) executor.stop("lease_ended", 0, `lease ${flags.leaseEnd}`);
      if (deps.signal?.aborted) executor.stop("runner_stopped", 0, "the runner was stopped");
      outcome = await executor.run();
      phases.mark("stepsDone");
    } else {
      const why = deps.signal?.aborted ? { reason: "runner_error" as const, message: "the runner was stopped before the first step" } : { reason: "step_failed" as const, message: "canceled before the first step" };
      outcome = { steps: job.steps.map((s) => ({ name: s.name, exitCode: null, signal: null, startedAt: null, finishedAt: null })), failure: { ...why, step: null }, exitCode: null };
    }

    // Artifacts: all on success, `always` ones otherwise; none after a hard cancel or a lost lease.
    state = "finishing";
    if (sandbox !== null && flags.leaseEnd === null && flags.cancel !== "hard") {
      const ok = outcome.failure === null && flags.cancel === "none";
      const rules = job.artifacts.filter((r) => ok || r.when === "always");
      artifacts = await uploadArtifacts({
        workspace: sandbox.workspaceOnHost, stagingDir: deps.jobDir, rules, signal: leaseAlive.signal,
        sink: {
          create: (body, signal) => client.createArtifact(token, body, { signal }),
          upload: (target, file, size, signal) => client.uploadArtifact(token, target, file, size, { signal }),
        },
      });
      for (const a of artifacts) {
        for (const n of a.notes) log.notice(n);
        if (a.artifactId) log.notice(`artifact ${a.name}: ${a.files} file(s), ${a.size} bytes, sha256 ${a.sha256}`);
      }
      const broken = artifacts.find((a) => a.error !== null);
      if (broken && outcome.failure === null && flags.cancel === "none" && flags.leaseEnd === null) {
        outcome = { ...outcome, failure: { reason: "runner_error", step: null, message: `artifact ${broken.name} could not be uploaded: ${(broken.error as Error).message}` } };
      }
      phases.mark("artifactsDone");
    }
  } catch (err) {
    logger.error({ err: String(err), stack: (err as Error).stack }, "runner error");
    outcome = { ...outcome, failure: { reason: "runner_error", step: null, message: `runner error: ${(err as Error).message}` } };
  } finally {
    unwatchSpool();
    deps.signal?.removeEventListener("abort", onRunnerStop);
  }

  const failure = spool.truncated && outcome.failure === null
    ? { reason: "log_limit" as const, step: null, message: `log limit of ${job.limits.logMiB} MiB reached` }
    : outcome.failure;
  const body: Omit<CompleteRequest, "log"> = {
    result: failedResult(failure),
    exitCode: failure === null ? 0 : outcome.exitCode,
    failure,
    steps: outcome.steps,
    artifacts: artifacts.flatMap((a) => (a.artifactId ? [a.artifactId] : [])),
  };
  log.marker("job-end", { result: body.result, exitCode: body.exitCode, failure: body.failure });

  let report: JobReport = "unreported";
  let sent: CompleteRequest | null = null;
  try {
    if (flags.leaseEnd !== null) {
      // Stale or lost: no complete; the log tail only, briefly.
      const tail = deadlineSignal(clock, timings.tailUploadMs);
      await uploader.finish(tail.signal).catch(() => {});
      tail.clear();
      report = flags.leaseEnd;
    } else {
      reporting = true;
      // Teardown under its own bound (STYLE.md 4): a slow but reachable server still gets the
      // report; a stale lease (409) or the bound ends it.
      const bound = deadlineSignal(clock, 2 * lease.ttlMs + timings.tailUploadMs, leaseStale.signal);
      const r = await report_(lease, body, flags.cancel !== "none", uploader, client, bound.signal, logger);
      bound.clear();
      report = r.report;
      sent = r.sent;
    }
    phases.mark("reported");
  } finally {
    // The held heartbeat is let go while the sandbox is disposed of: neither waits for the other.
    const stopping = heartbeat.stop().then(() => phases.mark("heartbeatStopped"));
    uploader.cancel(new Error("job over"));
    spool.close();
    if (sandbox !== null) {
      const bound = deadlineSignal(clock, timings.disposeMs);
      await Promise.race([sandbox.dispose(), new Promise((r) => bound.signal.addEventListener("abort", r))]).catch((err) => {
        logger.error({ err: String(err) }, "sandbox dispose failed");
      });
      bound.clear();
      phases.mark("disposed");
    }
    await stopping;
    await rm(deps.jobDir, { recursive: true, force: true });
    phases.mark("cleanedUp");
    logger.info({ jobId: lease.jobId, report, phases: phases.snapshot() }, "job phases");
  }
  if (report === "stale" || report === "lost") logger.warn({ jobId: lease.jobId, report }, "job not reported: lease ended");
  return { report, result: sent };
}

/** Final log flush, then complete (or cancel-ack); a 412 rewinds the log and tries again. */
async function report_(
  lease: Lease, body: Omit<CompleteRequest, "log">, canceled: boolean, uploader: LogUploader,
  client: RunnerProtocol, signal: AbortSignal, logger: RunnerLogger,
): Promise<{ report: JobReport; sent: CompleteRequest | null }> {
  for (let round = 0; round < 5; round++) {
    const summary = await uploader.finish(signal);
    if (signal.aborted) return { report: "lost", sent: null };
    if (uploader.stopped === "stale") return { report: "stale", sent: null };
    const full: CompleteRequest = { ...body, log: { bytes: summary.bytes, sha256: summary.sha256 } };
    if (uploader.stopped === "limit" && full.failure === null) {
      full.failure = { reason: "log_limit", step: null, message: "the server's log limit was reached" };
      full.result = "failed";
    }
    try {
      const res = canceled ? await client.cancelAck(lease.leaseToken, full, { signal }) : await client.complete(lease.leaseToken, full, { signal });
      if (res.status === "accepted") return { report: canceled ? "canceled" : "completed", sent: full };
      logger.warn({ committed: res.committed, bytes: summary.bytes }, "server log incomplete; resending");
      uploader.rewind(res.committed);
    } catch (err) {
      if (isDeltaError(err, "E_LEASE_STALE")) return { report: "stale", sent: null };
      if (signal.aborted) return { report: "lost", sent: null };
      logger.error({ err: String(err) }, canceled ? "cancel-ack refused" : "complete refused");
      return { report: "unreported", sent: null };
    }
  }
  return { report: "unreported", sent: null };
}
