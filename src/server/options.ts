/** Every knob of the reference control plane, with defaults from config/defaults.ts. */
import type { Logger } from "pino";
import { systemClock, type Clock } from "../base/clock.ts";
import { defaults } from "../config/defaults.ts";
import type { S3BlobStoreOptions } from "./blobs/s3-blob-store.ts";

/** How hard the state store syncs before a write is acknowledged (`none`: never; for a throwaway state, `deltaci run`'s). */
export type Durability = "full" | "normal" | "none";

export interface ServerOptions {
  /** Listen host; default 127.0.0.1. */
  host?: string;
  /** Listen port; 0 picks a free port. Default 8181. */
  port?: number;
  dataDir: string;
  /**
   * `postgres://USER@HOST:PORT/DB`: keep the state in PostgreSQL (replicas may share it) instead
   * of SQLite under `dataDir`. The API and controller tokens are then never generated.
   */
  databaseUrl?: string;
  logger?: Logger;
  clock?: Clock;
  /** When absent, read from or generated into `<dataDir>/api-token` (mode 0600). */
  apiToken?: string;
  /** When absent, read from or generated into `<dataDir>/controller-token` (mode 0600). */
  controllerToken?: string;
  /**
   * Key file sealing job secrets at rest (secrets/key-file.ts). Given: it must exist. Absent:
   * `<dataDir>/secrets-key`, generated (mode 0600) on the first start.
   */
  secretsKeyFile?: string;
  /** Puts a fresh key first in the key file before starting; the start re-seals every stored secret with it. */
  rotateSecretsKey?: boolean;
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
  /** How often logs that can no longer change move to the blob store (engine/log-archive.ts). */
  logArchiveIntervalMs?: number;
  /**
   * Move finished logs to the blob store. Default: yes, unless the state is shared (PostgreSQL)
   * and the blobs are on this replica's disk, where other replicas could not read them.
   */
  archiveLogs?: boolean;
  /** Serve the web view (its routes, assets and fleet sampler); default true. `deltaci run`'s embedded server, which no browser reaches, passes false. */
  web?: boolean;
  /** Terminal jobs (attempts, logs, artifacts) are deleted this long after they finished; absent or null: kept forever, and nothing is collected. */
  retentionMs?: number | null;
  gcIntervalMs?: number;
  gcGraceMs?: number;
  gcStaleUploadMs?: number;
  gcJobBatch?: number;
  jsonBodyLimitBytes?: number;
  logChunkLimitBytes?: number;
  artifactMaxBytes?: number;
  sourceMaxBytes?: number;
  /** `full`: fsync the WAL on every (group) commit. `normal`: survives a killed process, not a power cut. `none`: no fsync at all. */
  durability?: Durability;
  /** Where artifacts and source archives live; default: the filesystem store under `dataDir`. */
  blobStore?: BlobStoreOptions;
}

/** `fs`: `<dataDir>/cas`. `s3`: a bucket (and key prefix) of an S3-compatible store, uploads presigned. */
export type BlobStoreOptions = { kind: "fs" } | ({ kind: "s3" } & Omit<S3BlobStoreOptions, "partSizeBytes" | "multipartThresholdBytes" | "presignExpiryMs"> & Partial<S3BlobStoreOptions>);

export type ResolvedOptions = Required<Omit<ServerOptions, "logger" | "databaseUrl" | "apiToken" | "controllerToken" | "secretsKeyFile" | "rotateSecretsKey" | "blobStore" | "archiveLogs" | "web">> & {
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
    logArchiveIntervalMs: o.logArchiveIntervalMs ?? defaults.logArchiveIntervalMs,
    retentionMs: o.retentionMs ?? null,
    gcIntervalMs: o.gcIntervalMs ?? defaults.gcIntervalMs,
    gcGraceMs: o.gcGraceMs ?? defaults.gcGraceMs,
    gcStaleUploadMs: o.gcStaleUploadMs ?? defaults.gcStaleUploadMs,
    gcJobBatch: Math.max(1, o.gcJobBatch ?? defaults.gcJobBatch),
    jsonBodyLimitBytes: o.jsonBodyLimitBytes ?? defaults.jsonBodyLimitBytes,
    logChunkLimitBytes: o.logChunkLimitBytes ?? defaults.logChunkLimitBytes,
    artifactMaxBytes: o.artifactMaxBytes ?? defaults.artifactMaxBytes,
    sourceMaxBytes: o.sourceMaxBytes ?? SOURCE_MAX_BYTES_DEFAULT,
    durability: o.durability ?? "full",
  };
}

/** `s3://BUCKET[/prefix]` → bucket and a key prefix that is empty or ends in `/`. */
export function parseS3Url(url: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url.trim());
  if (!m?.[1]) throw new Error(`invalid blob store "${url}" (expected fs or s3://BUCKET[/prefix])`);
  const prefix = (m[2] ?? "").replace(/^\/+|\/+$/g, "");
  if (!/^[A-Za-z0-9._/-]*$/.test(prefix) || prefix.split("/").some((s) => s === "." || s === ".." || (prefix !== "" && s === ""))) {
    throw new Error(`invalid key prefix in "${url}" (letters, digits, . _ - and single slashes)`);
  }
  return { bucket: m[1], prefix: prefix === "" ? "" : `${prefix}/` };
}

/** `HOST:PORT`, `:PORT` or `[::1]:PORT`. */
export function splitListen(listen: string): [string, number] {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(listen.trim());
  if (!m) throw new Error(`invalid listen address "${listen}" (expected HOST:PORT)`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`invalid port in "${listen}"`);
  return [m[1] ?? (m[2] || "127.0.0.1"), port];
}
