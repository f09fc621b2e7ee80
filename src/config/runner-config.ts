/**
 * `deltaci runner` settings: flags first, then DELTACI_* environment variables, then defaults
 * (the only place the runner reads the environment). Durations accept 500ms/10s/5m.
 */
import { dirname, resolve } from "node:path";
import { DeltaError } from "../base/errors.ts";
import { parseDurationMs, parseSizeBytes } from "../base/units.ts";
import type { RunnerSettings } from "../runner/create-runner.ts";
import { defaults, DELTACI_VERSION } from "./defaults.ts";

export interface RunnerFlags {
  server?: string;
  registrationTokenFile?: string;
  labels?: string;
  isolation?: string;
  workDir?: string;
  idleTimeout?: string;
  slot?: string;
  name?: string;
  cancelGrace?: string;
  requestTimeout?: string;
  logFlushInterval?: string;
  logFlushBytes?: string;
  logLevel?: string;
  /** false with --no-prewarm. */
  prewarm?: boolean;
  /** Comma-separated `host[:port]` registries pulled without TLS verification (--insecure-registries). */
  insecureRegistries?: string;
  /** Comma-separated dirs below which jobs may name local OCI layouts and archives (--image-roots). */
  imageRoots?: string;
  /** File the runner appends its typed events to, one JSON line each (--events-file). */
  eventsFile?: string;
}

export interface RunnerConfig {
  serverUrl: string;
  registrationTokenFile: string;
  labels: string[];
  isolation: "oci" | "process";
  /** This runner's slot directory (sandboxes, spool, staging). */
  workDir: string;
  /** Toolchain probe cache (the work dir's parent, shared by slots). */
  cacheDir: string;
  slot: number;
  name: string;
  idleTimeoutMs: number;
  cancelGraceMs: number;
  requestTimeoutMs: number;
  logFlushIntervalMs: number;
  logFlushBytes: number;
  logChunkBytes: number;
  leaseWaitMs: number;
  registerDeadlineMs: number;
  tailUploadMs: number;
  disposeMs: number;
  logLevel: string;
  /** Build a sandbox for the expected job while waiting for a lease. */
  prewarm: boolean;
  /** Registries (`host[:port]`) whose images are pulled without TLS verification. */
  insecureRegistries: string[];
  /** Dirs below which jobs may name local images; null: the sandbox's default (its cache's images dir). */
  imageRoots: string[] | null;
  /** Where the runner appends its typed events (its supervisor's channel), or null. */
  eventsFile: string | null;
}

/** Environment variables the runner reads (documented in docs/runner.md). */
export const RUNNER_ENV = {
  server: "DELTACI_SERVER",
  registrationTokenFile: "DELTACI_REGISTRATION_TOKEN_FILE",
  labels: "DELTACI_RUNNER_LABELS",
  isolation: "DELTACI_ISOLATION",
  workDir: "DELTACI_RUNNER_WORK_DIR",
  slot: "DELTACI_RUNNER_SLOT",
  idleTimeout: "DELTACI_RUNNER_IDLE_TIMEOUT",
  cancelGrace: "DELTACI_CANCEL_GRACE",
  logLevel: "DELTACI_LOG_LEVEL",
  prewarm: "DELTACI_RUNNER_PREWARM",
  insecureRegistries: "DELTACI_INSECURE_REGISTRIES",
  imageRoots: "DELTACI_IMAGE_ROOTS",
} as const;

export function runnerConfig(flags: RunnerFlags, env: NodeJS.ProcessEnv = process.env, hostname = "runner"): RunnerConfig {
  const pick = (k: Exclude<keyof typeof RUNNER_ENV, "prewarm">): string | undefined => {
    const v = flags[k] ?? env[RUNNER_ENV[k]];
    return v !== undefined && v.trim() !== "" ? v.trim() : undefined;
  };
  const serverUrl = pick("server");
  if (!serverUrl) throw new DeltaError("E_INVALID", `--server (or ${RUNNER_ENV.server}) is required`);
  // Several replicas: comma-separated; the client fails over between them (client/http.ts).
  if (!serverUrl.split(",").every((u) => /^https?:\/\/[^\s/,]+/.test(u.trim()))) {
    throw new DeltaError("E_INVALID", `--server must be an http(s) URL (several: comma-separated), got ${JSON.stringify(serverUrl)}`);
  }
  const registrationTokenFile = pick("registrationTokenFile");
  if (!registrationTokenFile) throw new DeltaError("E_INVALID", `--registration-token-file (or ${RUNNER_ENV.registrationTokenFile}) is required`);
  const isolation = pick("isolation") ?? "oci";
  if (isolation !== "oci" && isolation !== "process") throw new DeltaError("E_INVALID", `--isolation must be oci or process, got ${JSON.stringify(isolation)}`);
  const slotText = pick("slot") ?? "0";
  if (!/^\d{1,6}$/.test(slotText)) throw new DeltaError("E_INVALID", `--slot must be a non-negative integer, got ${JSON.stringify(slotText)}`);
  const slot = Number(slotText);
  const labels = (pick("labels") ?? "").split(",").map((l) => l.trim()).filter((l) => l.length > 0);
  for (const l of labels) if (!/^[A-Za-z0-9._:/=-]{1,64}$/.test(l)) throw new DeltaError("E_INVALID", `invalid label ${JSON.stringify(l)}`);
  const workDir = resolve(pick("workDir") ?? `${defaults.dataDir}/runner/slot-${slot}`);
  const flushBytes = flags.logFlushBytes ? parseSizeBytes(flags.logFlushBytes) : defaults.logFlushBytes;
  const insecureRegistries = (pick("insecureRegistries") ?? "").split(",").map((r) => r.trim()).filter((r) => r.length > 0);
  for (const r of insecureRegistries) if (!/^[A-Za-z0-9.-]{1,253}(:\d{1,5})?$/.test(r)) throw new DeltaError("E_INVALID", `--insecure-registries: expected host[:port] entries, got ${JSON.stringify(r)}`);
  return {
    serverUrl,
    registrationTokenFile: resolve(registrationTokenFile),
    labels,
    isolation,
    workDir,
    cacheDir: dirname(workDir),
    slot,
    name: flags.name ?? `${hostname}-slot-${slot}`,
    idleTimeoutMs: parseDurationMs(pick("idleTimeout") ?? defaults.runnerIdleTimeoutMs),
    cancelGraceMs: parseDurationMs(pick("cancelGrace") ?? defaults.cancelGraceMs),
    requestTimeoutMs: parseDurationMs(flags.requestTimeout ?? defaults.requestTimeoutMs),
    logFlushIntervalMs: parseDurationMs(flags.logFlushInterval ?? defaults.logFlushIntervalMs),
    logFlushBytes: flushBytes,
    logChunkBytes: defaults.logChunkLimitBytes,
    leaseWaitMs: defaults.leaseWaitDefaultMs,
    registerDeadlineMs: defaults.runnerRegisterDeadlineMs,
    tailUploadMs: defaults.runnerTailUploadMs,
    disposeMs: defaults.sandboxDisposeMs,
    logLevel: pick("logLevel") ?? "info",
    // --no-prewarm, or DELTACI_RUNNER_PREWARM=0|false|no (commander always sets the flag, so the flag can only turn it off).
    insecureRegistries,
    eventsFile: flags.eventsFile ? resolve(flags.eventsFile) : null,
    imageRoots: pick("imageRoots")?.split(",").map((d) => d.trim()).filter((d) => d.length > 0).map((d) => resolve(d)) ?? null,
    prewarm: flags.prewarm !== false && !/^(0|false|no|off)$/i.test(env[RUNNER_ENV.prewarm]?.trim() ?? ""),
  };
}

/** What `createRunner` needs, from a runner's config. */
export function runnerSettings(cfg: { cacheDir: string | null } & Pick<RunnerConfig, "serverUrl" | "labels" | "idleTimeoutMs" | "leaseWaitMs" | "registerDeadlineMs" | "requestTimeoutMs" | "logFlushIntervalMs" | "logFlushBytes" | "logChunkBytes" | "cancelGraceMs" | "tailUploadMs" | "disposeMs" | "prewarm">): RunnerSettings {
  return {
    serverUrl: cfg.serverUrl, version: DELTACI_VERSION, labels: cfg.labels, cacheDir: cfg.cacheDir, idleTimeoutMs: cfg.idleTimeoutMs,
    leaseWaitMs: cfg.leaseWaitMs, registerDeadlineMs: cfg.registerDeadlineMs, requestTimeoutMs: cfg.requestTimeoutMs, prewarm: cfg.prewarm,
    timings: {
      flushIntervalMs: cfg.logFlushIntervalMs, flushBytes: cfg.logFlushBytes, chunkBytes: cfg.logChunkBytes,
      cancelGraceMs: cfg.cancelGraceMs, tailUploadMs: cfg.tailUploadMs, disposeMs: cfg.disposeMs,
    },
  };
}

/** Settings of runners that take every default (runner hosts, `deltaci run`), for `serverUrl`. */
export function defaultRunnerSettings(serverUrl: string, over: { labels: string[]; cacheDir: string | null; idleTimeoutMs?: number; prewarm: boolean }): RunnerSettings {
  return runnerSettings({
    serverUrl, labels: over.labels, cacheDir: over.cacheDir, idleTimeoutMs: over.idleTimeoutMs ?? defaults.runnerIdleTimeoutMs, prewarm: over.prewarm,
    leaseWaitMs: defaults.leaseWaitDefaultMs, registerDeadlineMs: defaults.runnerRegisterDeadlineMs, requestTimeoutMs: defaults.requestTimeoutMs,
    logFlushIntervalMs: defaults.logFlushIntervalMs, logFlushBytes: defaults.logFlushBytes, logChunkBytes: defaults.logChunkLimitBytes,
    cancelGraceMs: defaults.cancelGraceMs, tailUploadMs: defaults.runnerTailUploadMs, disposeMs: defaults.sandboxDisposeMs,
  });
}
