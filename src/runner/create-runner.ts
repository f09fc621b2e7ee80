/**
 * The one wiring of a runner (issue 10: `deltaci runner`, the runner host's sessions and
 * `deltaci run` all come through here): the HTTP protocol client with its retry policy, built
 * for this runner alone and destroyed when it ends, around `runRunner` (a host's runners share
 * its keep-alive connections, which carry no credential: see ConnectionPool). A runner is one
 * registration, one session, at most one job; nothing of it is kept once `run()` resolves.
 */
import type { Clock } from "../base/clock.ts";
import { HttpClient, type ConnectionPool } from "../client/http.ts";
import { RetryPolicy } from "../client/retry-policy.ts";
import { RunnerClient } from "../client/runner-client.ts";
import type { SandboxFactory, SlotInfo } from "../sandbox/types.ts";
import type { RunnerLogger } from "./ports.ts";
import type { RunnerEventListener } from "./runner-events.ts";
import { runRunner, type RunnerExit } from "./runner.ts";
import type { WarmShapes } from "./warm-shape.ts";
import type { RunJobTimings } from "./run-job.ts";

/** How runners behave: the same for every runner of a process (from config/runner-config.ts). */
export interface RunnerSettings {
  serverUrl: string;
  version: string;
  labels: string[];
  /** Toolchain probe cache and remembered warm shape (shared by slots), or none. */
  cacheDir: string | null;
  /** The toolchain probe's cache file, when not `cacheDir`/toolchains.json (RunnerOptions.toolchainsCache). */
  toolchainsCache?: string | null;
  idleTimeoutMs: number;
  leaseWaitMs: number;
  registerDeadlineMs: number;
  /** Hard timeout of one request. */
  requestTimeoutMs: number;
  timings: RunJobTimings;
  /** Build the expected job's sandbox while registering (see RunnerOptions.prewarm). */
  prewarm: boolean;
}

/** One runner: its single-use registration token, its name and its slot. */
export interface RunnerIdentity {
  registrationToken: string;
  name: string;
  slot: SlotInfo;
  /** False when the slot's owner vouches that it is clean (RunnerOptions.reapSlot). */
  reapSlot: boolean;
}

export interface CreateRunnerDeps {
  sandboxFactory: SandboxFactory;
  clock: Clock;
  logger: RunnerLogger;
  onEvent?: RunnerEventListener;
  /** Connections shared with the process's other runners (a runner host's); default: the runner's own. */
  connections?: ConnectionPool;
  /** The warm shape as the process keeps it (a runner host's); default: the runner's own. */
  warmShapes?: WarmShapes;
  /** The toolchain probe as the process shares it (a runner host's); default: the runner's own. */
  toolchains?: () => Promise<Record<string, string>>;
}

export interface Runner {
  /**
   * Registers, leases at most one job, runs and reports it; `signal` asks it to stop, `drain` to
   * end unless it already holds a job (see `RunnerDeps.drain`).
   */
  run(signal?: AbortSignal, drain?: AbortSignal): Promise<RunnerExit>;
}

export function createRunner(settings: RunnerSettings, identity: RunnerIdentity, deps: CreateRunnerDeps): Runner {
  return {
    async run(signal, drain) {
      const retry = new RetryPolicy({
        clock: deps.clock,
        onRetry: (err, attempt, waitMs) => deps.logger.info({ err: String(err), attempt, waitMs }, "retrying"),
      });
      const http = new HttpClient(settings.serverUrl, { timeoutMs: settings.requestTimeoutMs, ...(deps.connections ? { pool: deps.connections } : {}) });
      const client = new RunnerClient({ http, retry, requestTimeoutMs: settings.requestTimeoutMs });
      // runRunner destroys the client (and its connections) whatever happens.
      return runRunner(
          {
            registrationToken: identity.registrationToken, name: identity.name, version: settings.version, labels: settings.labels,
            slot: identity.slot, cacheDir: settings.cacheDir, toolchainsCache: settings.toolchainsCache ?? null, idleTimeoutMs: settings.idleTimeoutMs, leaseWaitMs: settings.leaseWaitMs,
            registerDeadlineMs: settings.registerDeadlineMs, timings: settings.timings, prewarm: settings.prewarm, reapSlot: identity.reapSlot,
          },
          {
            client, sandboxFactory: deps.sandboxFactory, clock: deps.clock, logger: deps.logger,
            ...(deps.onEvent ? { onEvent: deps.onEvent } : {}), ...(signal ? { signal } : {}), ...(drain ? { drain } : {}),
            ...(deps.warmShapes ? { warmShapes: deps.warmShapes } : {}), ...(deps.toolchains ? { toolchains: deps.toolchains } : {}),
          },
      );
    },
  };
}
