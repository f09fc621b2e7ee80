/**
 * The runner's whole life: reap the slot, register, lease one job (long poll, give up when idle
 * too long), run it, report, exit. `runRunner` is embeddable (tests, `deltaci up`); the CLI maps
 * its result to an exit status. The sandbox factory and the protocol client are passed in.
 */
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Clock } from "../base/clock.ts";
import { isDeltaError } from "../base/errors.ts";
import type { Lease } from "../protocol/schemas.ts";
import type { SandboxFactory, SlotInfo } from "../sandbox/types.ts";
import { probeCapabilities, probeToolchains } from "./capabilities.ts";
import type { RunnerLogger, RunnerProtocol } from "./ports.ts";
import { prepareJobDir } from "./job-run.ts";
import { runJob, type JobReport, type RunJobTimings } from "./run-job.ts";
import { ignoreRunnerEvents, type RunnerEventListener } from "./runner-events.ts";
import { WarmShapes } from "./warm-shape.ts";

export interface RunnerOptions {
  registrationToken: string;
  name: string;
  version: string;
  labels: string[];
  slot: SlotInfo;
  /** Where the toolchain probe cache lives (shared by slots). */
  cacheDir: string | null;
  /**
   * The toolchain probe's cache file, when not `cacheDir`/toolchains.json: `deltaci run`'s
   * runners have a fresh `cacheDir` per run, and keep this one in the user's cache dir.
   */
  toolchainsCache?: string | null;
  idleTimeoutMs: number;
  /** Upper bound of one lease long poll (the server may clamp it further). */
  leaseWaitMs: number;
  /** How long to keep retrying `register` against an unreachable server. */
  registerDeadlineMs: number;
  timings: RunJobTimings;
  /**
   * Build a sandbox for the expected job (the shape of the last job leased on this host, kept in
   * `cacheDir`, else the defaults) while registering and waiting for a lease, so that a matching
   * job starts with its first step. The caller owns the factory and calls its `close()` after
   * `runRunner` returns (an untaken warm sandbox is disposed of there).
   */
  prewarm?: boolean;
  /**
   * Reap the slot before registering (default true): a fresh runner process cannot know what a
   * crashed predecessor left there. A runner host that keeps its slots clean between sessions
   * (and may hold a prewarmed sandbox in the slot) passes false.
   */
  reapSlot?: boolean;
}

export interface RunnerDeps {
  client: RunnerProtocol;
  sandboxFactory: SandboxFactory;
  clock: Clock;
  logger: RunnerLogger;
  /** Abort to ask the runner to stop (SIGTERM): a job it runs is stopped and reported as runner_error. */
  signal?: AbortSignal;
  /**
   * Abort to drain the runner: it ends if it holds no job yet, and a job it already leased runs to
   * its end. A supervisor drains a runner it saw idle, and a lease may be on its way back at that
   * moment: the long poll is superseded on the server, never dropped, so that job is kept.
   */
  drain?: AbortSignal;
  /** Typed lifecycle events for the runner's supervisor (default: ignored). */
  onEvent?: RunnerEventListener;
  /** The warm shape, shared with the process's other runners (a runner host's); default: this runner's own, on `cacheDir`. */
  warmShapes?: WarmShapes;
  /** The toolchain probe, shared with the process's other runners (a runner host's); default: this runner's own. */
  toolchains?: () => Promise<Record<string, string>>;
}

export type RunnerExitReason = "reported" | "idle" | "stopped" | "register_failed" | "lease_failed" | JobReport;

export interface RunnerExit {
  /** 0: the job was reported, or no job came; 1: a job was leased but not reported; 2: could not start. */
  code: 0 | 1 | 2;
  reason: RunnerExitReason;
  jobId: string | null;
  runnerId: string | null;
}

/** How long a drained runner's superseding poll may take (retries included) before the runner ends. */
const SUPERSEDE_DEADLINE_MS = 10_000;

/** Aborted when either is (undefined when neither is given). */
function anySignal(a: AbortSignal | undefined, b: AbortSignal | undefined): AbortSignal | undefined {
  return a && b ? AbortSignal.any([a, b]) : (a ?? b);
}

export async function runRunner(opts: RunnerOptions, deps: RunnerDeps): Promise<RunnerExit> {
  const { client, clock, logger, sandboxFactory } = deps;
  const emit = deps.onEvent ?? ignoreRunnerEvents;
  const startedAt = clock.now();
  const exit = (code: RunnerExit["code"], reason: RunnerExitReason, jobId: string | null = null, runnerId: string | null = null): RunnerExit => {
    logger.info({ code, reason, jobId, runnerId }, "runner exits");
    return { code, reason, jobId, runnerId };
  };
  const shapes = opts.prewarm && opts.cacheDir ? (deps.warmShapes ?? new WarmShapes(join(opts.cacheDir, "warm-shape.json"))) : null;
  const jobDir = join(opts.slot.workDir, "runner");
  let leased = false;
  let jobDirMade: Promise<void> = Promise.resolve();
  try {
    // The toolchains do not depend on the slot: probed while the slot is reaped (never rejects).
    const toolchains = deps.toolchains?.() ?? probeToolchains(opts.toolchainsCache ?? (opts.cacheDir ? join(opts.cacheDir, "toolchains.json") : null));
    toolchains.catch(() => {}); // awaited below; if set-up fails first, its rejection is not left unhandled
    // Reap first: the work dir may be removed by it, and disk space is measured there after.
    // (The oci factory's one-time preparation, helpers, cgroups, seccomp, happens in reapSlot.)
    const reaped = opts.reapSlot === false ? [] : await sandboxFactory.reapSlot(opts.slot);
    // Traversable (not listable) by the sandbox's mapped uids: the oci backend mounts paths below it.
    await mkdir(opts.slot.workDir, { recursive: true, mode: 0o711 });
    // Built while we register and wait; never rejects; the factory's owner closes it.
    if (opts.prewarm) {
      const spec = await (shapes ?? new WarmShapes(null)).spec(opts.slot);
      const since = clock.now();
      void sandboxFactory.prewarm(spec).then(() => logger.info({ ms: clock.now() - since, image: spec.image.kind, limits: spec.limits }, "prewarm done"));
    }
    const capabilities = await probeCapabilities({ labels: opts.labels, isolation: sandboxFactory.isolation, workDir: opts.slot.workDir, toolchains });
    if (reaped.length > 0) logger.warn({ slot: opts.slot.index, reaped }, "reaped what a previous runner left in this slot");

    // The job dir and its spool are made while the session registers and waits (job-run.ts).
    jobDirMade = prepareJobDir(jobDir);
    // A drain during registration ends it as a stop does (no job can be claimed for it yet).
    const stopped = () => deps.signal?.aborted === true || deps.drain?.aborted === true;
    let reg;
    try {
      reg = await client.register(opts.registrationToken, { name: opts.name, version: opts.version, capabilities }, {
        signal: anySignal(deps.signal, deps.drain), deadline: clock.now() + opts.registerDeadlineMs,
      });
    } catch (err) {
      if (stopped()) return exit(0, "stopped");
      logger.error({ err: String(err) }, "registration failed");
      return exit(2, "register_failed");
    }
    logger.info({ runnerId: reg.runnerId, startMs: clock.now() - startedAt, toolchains: capabilities.toolchains }, "registered");
    emit({ type: "registered", runnerId: reg.runnerId });

    const idleUntil = clock.now() + opts.idleTimeoutMs;
    // A drain never aborts a long poll: the server may already have claimed a job for it, the answer
    // on its way. A 1 ms poll of the same session supersedes it instead (the server answers the
    // first 204 unless it got a job, and the second takes a job only if one is queued): whichever
    // brings a lease, that job runs; with none, the runner ends.
    const sessionToken = reg.sessionToken;
    let superseding: Promise<Lease | null> | null = null;
    const supersede = () => {
      superseding ??= client.lease(sessionToken, 1, { signal: deps.signal, deadline: clock.now() + SUPERSEDE_DEADLINE_MS }).catch(() => null);
    };
    deps.drain?.addEventListener("abort", supersede, { once: true });
    let lease: Lease | null = null;
    try {
      while (lease === null) {
        const left = idleUntil - clock.now();
        if (left <= 0) return exit(0, "idle", null, reg.runnerId);
        if (deps.signal?.aborted) return exit(0, "stopped", null, reg.runnerId);
        if (deps.drain?.aborted) {
          lease = await (superseding ?? Promise.resolve(null));
          if (lease === null) return exit(0, "stopped", null, reg.runnerId);
          continue; // the loop ends: a lease
        }
        try {
          lease = await client.lease(reg.sessionToken, Math.min(left, opts.leaseWaitMs, reg.leaseWaitMs > 0 ? reg.leaseWaitMs : opts.leaseWaitMs), {
            signal: deps.signal, deadline: idleUntil,
          });
        } catch (err) {
          if (deps.signal?.aborted) return exit(0, "stopped", null, reg.runnerId);
          if (deps.drain?.aborted) continue; // the superseding poll says whether a job came
          if (isDeltaError(err, "E_TIMEOUT") || isDeltaError(err, "E_NETWORK")) continue;
          logger.error({ err: String(err) }, "lease failed");
          return exit(2, "lease_failed", null, reg.runnerId);
        }
      }
    } finally {
      deps.drain?.removeEventListener("abort", supersede);
    }
    leased = true;
    logger.info({ jobId: lease.jobId, attempt: lease.attempt, leaseId: lease.leaseId }, "leased");
    emit({ type: "leased", runnerId: reg.runnerId, jobId: lease.jobId, attempt: lease.attempt });
    // For the runner started next on this host (written beside the job, never rejects).
    const remembered = shapes?.remember(lease.job);
    await jobDirMade; // long done unless the job came at once; never delays the lease (its truncation must precede the spool's first write)
    const res = await runJob(lease, {
      client, clock, logger, sandboxFactory, slot: opts.slot, timings: opts.timings,
      jobDir,
      ...(deps.signal ? { signal: deps.signal } : {}),
    });
    await remembered;
    emit({ type: "job_ended", runnerId: reg.runnerId, jobId: lease.jobId, report: res.report });
    const reported = res.report === "completed" || res.report === "canceled";
    return exit(reported ? 0 : 1, reported ? "reported" : res.report, lease.jobId, reg.runnerId);
  } finally {
    await client.destroy().catch(() => {});
    // made for a job that never came (a leased job's teardown removes it)
    if (!leased) await jobDirMade.then(() => rm(jobDir, { recursive: true, force: true })).catch(() => {});
  }
}
