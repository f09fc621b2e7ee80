/**
 * `deltaci server`: a thin composition root over `startServer` (src/server). `addServerOptions`
 * and `serverOptionsFromFlags` let `deltaci up` reuse the same flags.
 */
import { Option, type Command } from "commander";
import { pino, type Logger } from "pino";
import { formatDurationMs, parseDurationMs, parseSizeBytes } from "../../base/units.ts";
import { defaults } from "../../config/defaults.ts";
import { serverEnv, type ServerEnv } from "../../config/server-config.ts";
import { parseS3Url, splitListen, startServer, type BlobStoreOptions, type ServerOptions } from "../../server/index.ts";

export interface ServerFlags {
  listen: string;
  dataDir: string;
  database?: string;
  logLevel: string;
  leaseTtl?: string;
  heartbeatInterval?: string;
  leaseWaitMax?: string;
  maxAttempts?: string;
  logLimit?: string;
  tailWindow?: string;
  hardStop?: string;
  registrationTtl?: string;
  sessionTtl?: string;
  sweepInterval?: string;
  archiveInterval?: string;
  archiveLogs?: string;
  retention?: string;
  gcInterval?: string;
  jsonBodyLimit?: string;
  logChunkLimit?: string;
  artifactMax?: string;
  sourceMax?: string;
  durability?: string;
  secretsKeyFile?: string;
  rotateSecretsKey?: boolean;
  blobStore?: string;
  s3Endpoint?: string;
  s3Region?: string;
  s3PathStyle?: boolean;
  s3MultipartThreshold?: string;
  s3PartSize?: string;
}

const d = (ms: number) => formatDurationMs(ms).replace(/\.0+s$/, "s").replace(/m0s$/, "m");
const sz = (bytes: number) => (bytes % 1024 ** 3 === 0 ? `${bytes / 1024 ** 3}Gi` : `${bytes / 1024 ** 2}Mi`);

/** Adds every server flag to `cmd` (durations like 2s/10m, sizes like 64Mi). */
export function addServerOptions(cmd: Command): Command {
  return cmd
    .option("--listen <host:port>", "address to listen on", defaults.listen)
    .option("--data-dir <dir>", "state, logs, artifacts and token files", defaults.dataDir)
    .option("--database <url>", "keep the state in PostgreSQL (postgres://USER@HOST:PORT/DB; env DELTACI_DATABASE_URL) instead of SQLite under --data-dir; replicas may share it")
    .option("--log-level <level>", "fatal|error|warn|info|debug|trace|silent", "info")
    .option("--lease-ttl <duration>", `lease lifetime without a heartbeat (default ${d(defaults.leaseTtlMs)})`)
    .option("--heartbeat-interval <duration>", `heartbeat interval given to runners (default ${d(defaults.heartbeatIntervalMs)})`)
    .option("--lease-wait-max <duration>", `longest lease long poll (default ${d(defaults.leaseWaitMaxMs)})`)
    .option("--max-attempts <n>", `attempts per job for lost leases and runner errors (default ${defaults.maxAttempts})`)
    .option("--log-limit <size>", `log bytes kept per attempt (default ${sz(defaults.logLimitBytes)})`)
    .option("--tail-window <duration>", `how long a finished attempt may still send log (default ${d(defaults.tailWindowMs)})`)
    .option("--hard-stop <duration>", `cancel-ack deadline before a hard stop (default ${d(defaults.hardStopMs)})`)
    .option("--registration-ttl <duration>", `default registration token lifetime (default ${d(defaults.registrationTtlMs)})`)
    .option("--session-ttl <duration>", `unused session token lifetime (default ${d(defaults.sessionTtlMs)})`)
    .option("--sweep-interval <duration>", `lease-expiry sweep interval (default ${d(defaults.sweepIntervalMs)})`)
    .option("--archive-interval <duration>", `how often finished logs (tail window closed) move to the blob store (default ${d(defaults.logArchiveIntervalMs)})`)
    .addOption(new Option("--archive-logs <when>", "auto: archive finished logs unless the state is shared (PostgreSQL) and the blobs are on this replica's disk; on: always (one replica, or a data dir every replica shares); off: logs stay in the state store").choices(["auto", "on", "off"]).default("auto"))
    .option("--retention <duration>", "delete jobs (attempts, logs, artifacts) this long after they finished, e.g. 30d, and collect what nothing references (default: keep everything)")
    .option("--gc-interval <duration>", `how often retention and garbage collection run, with --retention (default ${d(defaults.gcIntervalMs)})`)
    .option("--json-body-limit <size>", `largest JSON body (default ${sz(defaults.jsonBodyLimitBytes)})`)
    .option("--log-chunk-limit <size>", `largest log chunk (default ${sz(defaults.logChunkLimitBytes)})`)
    .option("--artifact-max <size>", `largest artifact (default ${sz(defaults.artifactMaxBytes)})`)
    .option("--source-max <size>", "largest source archive (default 1Gi)")
    .option("--secrets-key-file <file>", "AES-256 key file sealing job secrets at rest; must exist (default: <data-dir>/secrets-key, made 0600 on the first start)")
    .option("--blob-store <url>", "where artifacts and source archives live: fs (under --data-dir, the default) or s3://BUCKET[/prefix] (credentials: the standard AWS env vars and files)")
    .option("--s3-endpoint <url>", "S3-compatible endpoint (MinIO, R2, …); default: AWS for the region")
    .option("--s3-region <region>", `S3 region (default: AWS_REGION, else ${defaults.s3Region})`)
    .option("--s3-path-style", "path-style bucket addressing (http://host/BUCKET/key), as MinIO and most self-hosted stores need")
    .option("--s3-multipart-threshold <size>", `uploads this large go multipart, smaller ones are one presigned PUT (default ${sz(defaults.s3MultipartThresholdBytes)})`)
    .option("--s3-part-size <size>", `multipart part size, at least 5Mi (default ${sz(defaults.s3PartSizeBytes)})`)
    .option("--rotate-secrets-key", "put a fresh key first in the key file and re-seal every stored secret with it (older keys stay, to open old values)")
    .addOption(new Option("--durability <mode>", "full: fsync every commit; normal: survives a killed server, not a power cut").choices(["full", "normal"]).default("full"));
}

function positiveInt(text: string, flag: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1) throw new Error(`${flag} must be a positive integer`);
  return Number(text);
}

/** `--retention`: a unit is required (a bare number would be milliseconds: every job gone at once). */
function retentionMs(text: string): number {
  if (!/[a-z]\s*$/.test(text)) throw new Error("--retention needs a unit, e.g. 30d or 12h");
  const ms = parseDurationMs(text);
  if (ms <= 0) throw new Error("--retention must be longer than 0");
  return ms;
}

/** ServerOptions from parsed flags (plus the token env vars); throws on malformed values. */
export function serverOptionsFromFlags(flags: ServerFlags, logger?: Logger): ServerOptions {
  const [host, port] = splitListen(flags.listen);
  const env = serverEnv();
  const o: ServerOptions = { host, port, dataDir: flags.dataDir };
  const dur = (v: string | undefined) => (v === undefined ? undefined : parseDurationMs(v));
  const size = (v: string | undefined) => (v === undefined ? undefined : parseSizeBytes(v));
  const set = <K extends keyof ServerOptions>(k: K, v: ServerOptions[K] | undefined) => {
    if (v !== undefined) o[k] = v;
  };
  set("logger", logger);
  const databaseUrl = flags.database ?? env.databaseUrl;
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) throw new Error("--database must be a postgres:// URL");
  set("databaseUrl", databaseUrl);
  set("apiToken", env.apiToken);
  set("controllerToken", env.controllerToken);
  set("leaseTtlMs", dur(flags.leaseTtl));
  set("heartbeatIntervalMs", dur(flags.heartbeatInterval));
  set("leaseWaitMaxMs", dur(flags.leaseWaitMax));
  set("maxAttempts", flags.maxAttempts === undefined ? undefined : positiveInt(flags.maxAttempts, "--max-attempts"));
  set("logLimitBytes", size(flags.logLimit));
  set("tailWindowMs", dur(flags.tailWindow));
  set("hardStopMs", dur(flags.hardStop));
  set("registrationTtlMs", dur(flags.registrationTtl));
  set("sessionTtlMs", dur(flags.sessionTtl));
  set("sweepIntervalMs", dur(flags.sweepInterval));
  set("logArchiveIntervalMs", dur(flags.archiveInterval));
  if (flags.archiveLogs === "on" || flags.archiveLogs === "off") o.archiveLogs = flags.archiveLogs === "on";
  set("retentionMs", flags.retention === undefined ? undefined : retentionMs(flags.retention));
  if (flags.gcInterval !== undefined && flags.retention === undefined) throw new Error("--gc-interval needs --retention (nothing is collected without one)");
  set("gcIntervalMs", dur(flags.gcInterval));
  set("jsonBodyLimitBytes", size(flags.jsonBodyLimit));
  set("logChunkLimitBytes", size(flags.logChunkLimit));
  set("artifactMaxBytes", size(flags.artifactMax));
  set("sourceMaxBytes", size(flags.sourceMax));
  if (flags.durability === "full" || flags.durability === "normal") o.durability = flags.durability;
  set("secretsKeyFile", flags.secretsKeyFile);
  if (flags.rotateSecretsKey) o.rotateSecretsKey = true;
  set("blobStore", blobStoreFromFlags(flags, env));
  return o;
}

/** `--blob-store` and the `--s3-*` flags; S3 flags without an s3:// store are an error, not ignored. */
function blobStoreFromFlags(flags: ServerFlags, env: ServerEnv): BlobStoreOptions | undefined {
  const url = flags.blobStore;
  if (url === undefined || url === "fs") {
    const s3Flags = [flags.s3Endpoint, flags.s3Region, flags.s3PathStyle, flags.s3MultipartThreshold, flags.s3PartSize];
    if (s3Flags.some((f) => f !== undefined)) throw new Error("--s3-* flags need --blob-store s3://BUCKET[/prefix]");
    return undefined;
  }
  const { bucket, prefix } = parseS3Url(url);
  const partSizeBytes = flags.s3PartSize === undefined ? undefined : parseSizeBytes(flags.s3PartSize);
  if (partSizeBytes !== undefined && partSizeBytes < 5 * 1024 * 1024) throw new Error("--s3-part-size must be at least 5Mi (S3's smallest part)");
  return {
    kind: "s3", bucket, prefix, endpoint: flags.s3Endpoint, region: flags.s3Region ?? env.awsRegion ?? defaults.s3Region,
    forcePathStyle: flags.s3PathStyle === true, credentials: env.awsCredentials,
    ...(partSizeBytes === undefined ? {} : { partSizeBytes }),
    ...(flags.s3MultipartThreshold === undefined ? {} : { multipartThresholdBytes: parseSizeBytes(flags.s3MultipartThreshold) }),
  };
}

/** A pino logger on stderr that never writes tokens or bodies. */
export function serverLogger(level: string): Logger {
  return pino(
    {
      level,
      redact: { paths: ["req.headers.authorization", "headers.authorization", "authorization", "*.token", "*.leaseToken", "*.sessionToken", "secrets", "*.secrets"], censor: "[redacted]" },
    },
    pino.destination(2),
  );
}

export function registerServerCommand(program: Command): void {
  const cmd = program.command("server").description("run the reference control plane: runner protocol, job API, state machine, log and artifact store");
  addServerOptions(cmd).action(async (flags: ServerFlags) => {
    const logger = serverLogger(flags.logLevel);
    const srv = await startServer(serverOptionsFromFlags(flags, logger));
    process.stdout.write(`deltaci server ready at ${srv.url}\n`);
    process.stdout.write(`  data dir:         ${srv.dataDir}\n`);
    process.stdout.write(`  state:            ${srv.stateLocation}\n`);
    process.stdout.write(`  blob store:       ${flags.blobStore ?? "fs"}\n`);
    process.stdout.write(`  log archive:      ${srv.logArchive}\n`);
    process.stdout.write(`  API token:        ${srv.apiTokenFile ?? "from DELTACI_API_TOKEN"}\n`);
    process.stdout.write(`  controller token: ${srv.controllerTokenFile ?? "from DELTACI_CONTROLLER_TOKEN"}\n`);
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, "shutting down");
      srv.close().then(
        () => process.exit(0),
        (err: unknown) => {
          logger.error({ err }, "shutdown failed");
          process.exit(1);
        },
      );
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });
}
