/** Every knob of the reference control plane, with defaults from config/defaults.ts. */
import type { Logger } from "pino";
import { systemClock, type Clock } from "../base/clock.ts";
import { defaults } from "../config/defaults.ts";

/** How hard the state store syncs before a write is acknowledged. */
export type Durability = "full" | "normal";

export interface ServerOptions {
  /** Listen host; default 127.0.0.1. */
  host?: string;
  /** Listen port; 0 picks a free port. Default 8181. */
  port?: number;
  dataDir: string;
  logger?: Logger;
  clock?: Clock;
  /** When absent, read from or generated into `<dataDir>/api-token` (mode 0600). */
  apiToken?: string;
  /** When absent, read from or generated into `<dataDir>/controller-token` (mode 0600). */
  controllerToken?: string;
  leaseTtlMs?: number;
  heartbeatIntervalMs?: number;
  leaseWaitMaxMs?: number;
  leaseWaitDefaultMs?: number;
  maxAttempts?: number;
  logLimitBytes?: number;
  tailWindowMs?: number;
  hardStopMs?: number;
  registrationTtlMs?: number;
  sessionTtlMs?: number;
  sweepIntervalMs?: number;
  jsonBodyLimitBytes?: number;
  logChunkLimitBytes?: number;
  artifactMaxBytes?: number;
  sourceMaxBytes?: number;
  /** `full`: fsync the WAL on every (group) commit. `normal`: survives a killed process, not a power cut. */
  durability?: Durability;
}

export type ResolvedOptions = Required<Omit<ServerOptions, "logger" | "apiToken" | "controllerToken">> & {
  logger: Logger | undefined;
  clock: Clock;
};

export const SOURCE_MAX_BYTES_DEFAULT = 1024 * 1024 * 1024;

export function resolveOptions(o: ServerOptions): ResolvedOptions {
  const [defHost, defPort] = splitListen(defaults.listen);
  return {
    host: o.host ?? defHost,
    port: o.port ?? defPort,
    dataDir: o.dataDir,
    logger: o.logger,
    clock: o.clock ?? systemClock,
    leaseTtlMs: o.leaseTtlMs ?? defaults.leaseTtlMs,
    heartbeatIntervalMs: Math.min(o.heartbeatIntervalMs ?? defaults.heartbeatIntervalMs, o.leaseTtlMs ?? defaults.leaseTtlMs),
    leaseWaitMaxMs: o.leaseWaitMaxMs ?? defaults.leaseWaitMaxMs,
    leaseWaitDefaultMs: o.leaseWaitDefaultMs ?? defaults.leaseWaitDefaultMs,
    maxAttempts: o.maxAttempts ?? defaults.maxAttempts,
    logLimitBytes: o.logLimitBytes ?? defaults.logLimitBytes,
    tailWindowMs: o.tailWindowMs ?? defaults.tailWindowMs,
    hardStopMs: o.hardStopMs ?? defaults.hardStopMs,
    registrationTtlMs: o.registrationTtlMs ?? defaults.registrationTtlMs,
    sessionTtlMs: o.sessionTtlMs ?? defaults.sessionTtlMs,
    sweepIntervalMs: o.sweepIntervalMs ?? defaults.sweepIntervalMs,
    jsonBodyLimitBytes: o.jsonBodyLimitBytes ?? defaults.jsonBodyLimitBytes,
    logChunkLimitBytes: o.logChunkLimitBytes ?? defaults.logChunkLimitBytes,
    artifactMaxBytes: o.artifactMaxBytes ?? defaults.artifactMaxBytes,
    sourceMaxBytes: o.sourceMaxBytes ?? SOURCE_MAX_BYTES_DEFAULT,
    durability: o.durability ?? "full",
  };
}

/** `HOST:PORT`, `:PORT` or `[::1]:PORT`. */
export function splitListen(listen: string): [string, number] {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(listen.trim());
  if (!m) throw new Error(`invalid listen address "${listen}" (expected HOST:PORT)`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`invalid port in "${listen}"`);
  return [m[1] ?? (m[2] || "127.0.0.1"), port];
}
