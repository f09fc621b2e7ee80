/** Every default timing and limit of Delta CI, with its unit in its name (DESIGN.md, PROTOCOL.md). */
export const defaults = {
  // server / protocol
  listen: "127.0.0.1:8181",
  dataDir: "./.deltaci",
  leaseTtlMs: 30_000,
  heartbeatIntervalMs: 10_000,
  leaseWaitMaxMs: 60_000,
  leaseWaitDefaultMs: 30_000,
  maxAttempts: 3,
  logLimitBytes: 64 * 1024 * 1024,
  tailWindowMs: 5 * 60_000,
  hardStopMs: 60_000,
  registrationTtlMs: 10 * 60_000,
  sessionTtlMs: 10 * 60_000,
  sweepIntervalMs: 1_000,
  /** On shutdown, responses still being sent (a download to a client that stopped reading) get this long, then their connections are cut. */
  serverCloseGraceMs: 5_000,
  /** How often finished logs (ended, tail window closed) are moved to the blob store, on the replica that sweeps. */
  logArchiveIntervalMs: 10_000,
  jsonBodyLimitBytes: 1024 * 1024,
  // retention and garbage collection (server; off unless --retention is given)
  /** How often the collector runs (on the replica that sweeps). */
  gcIntervalMs: 10 * 60_000,
  /** A blob stored this recently is never collected (an upload or a submit may be about to reference it). */
  gcGraceMs: 60 * 60_000,
  /** A staged upload untouched for this long, whose artifact's attempt is no longer live, is removed. */
  gcStaleUploadMs: 24 * 60 * 60_000,
  /** Expired jobs deleted per transaction (keeps each one short next to the live traffic). */
  gcJobBatch: 50,
  logChunkLimitBytes: 4 * 1024 * 1024,
  /**
   * How long a log append that arrived ahead of `committed` waits for the appends before it
   * (never past its lease). A real gap costs the runner this plus one resend: kept under 2 s.
   */
  logOrderWaitMs: 1_500,
  /**
   * SQLite store: a log stays in the database (`log_chunks`, committed with the batch) until it
   * would grow past this; then it moves to its own file. Most logs never pay a file create and
   * a per-file fdatasync per batch.
   */
  logInlineMaxBytes: 64 * 1024,
  /**
   * Replicas on one database (PostgreSQL): how often a replica with runners in a lease long poll
   * looks for queued jobs itself, in case a NOTIFY was lost (the NOTIFY is the fast path).
   */
  replicaPollMs: 1_000,
  artifactMaxBytes: 4 * 1024 * 1024 * 1024,
  // S3 blob store (--blob-store s3://…)
  /** Uploads this large or larger go multipart (parts of s3PartSizeBytes); smaller ones are one presigned PUT. */
  s3MultipartThresholdBytes: 64 * 1024 * 1024,
  s3PartSizeBytes: 16 * 1024 * 1024,
  /** Lifetime of presigned upload URLs; a client past it asks again (POST create) and gets fresh ones. */
  s3PresignExpiryMs: 60 * 60_000,
  s3Region: "us-east-1",
  /** Parts a runner sends at once in a direct (presigned) multipart upload. */
  directUploadConcurrency: 4,
  /** Upload descriptors one direct artifact upload may use (a failed round asks for fresh URLs). */
  directUploadRounds: 3,
  // test reports (artifacts declared with `report: junit`), parsed by the server
  /**
   * Largest report artifact the server reads and parses (a bigger one is a notice, not a failure).
   * Parsing is synchronous, about 0.1-0.5 s per MiB on a loaded 2-core machine, once per digest.
   */
  testReportMaxBytes: 4 * 1024 * 1024,
  /** Parsed summaries kept in memory, by artifact digest. */
  testReportCacheEntries: 256,
  /** Failed cases listed per report (counts stay exact), and characters kept of a message / its details. */
  testReportFailedMax: 50,
  testReportMessageMaxChars: 1_000,
  testReportDetailsMaxChars: 4_000,
  // web view
  /** How long a web sign-in lasts (sessions live in the server's memory: a restart signs everyone out). */
  webSessionTtlMs: 12 * 3_600_000,
  /** Sessions held at once; the oldest is dropped past this. */
  webSessionsMax: 10_000,
  /** Live-update streams (SSE) coalesce changes for this long, and send a keep-alive this often. */
  webPushDebounceMs: 200,
  webPushKeepAliveMs: 15_000,
  /** The fleet page's time charts: one sample this often, this many kept (in memory). */
  webFleetSampleMs: 10_000,
  webFleetSamples: 360,
  /** `deltaci logs` / `run` folding: bytes of a folded group's last lines kept to print if its step fails. */
  logFoldTailBytes: 256 * 1024,
  // runner
  logFlushIntervalMs: 250,
  logFlushBytes: 256 * 1024,
  cancelGraceMs: 10_000,
  requestTimeoutMs: 15_000,
  runnerIdleTimeoutMs: 5 * 60_000,
  /** How long a runner keeps retrying `register` against an unreachable server. */
  runnerRegisterDeadlineMs: 60_000,
  /** How long a stale or lost runner still tries to send its log tail. */
  runnerTailUploadMs: 10_000,
  /** Bound on one sandbox dispose. */
  sandboxDisposeMs: 60_000,
  // runner host (sessions in one warm process)
  /** A host serves at most this many sessions, then drains and exits (its successor is started ahead). */
  hostMaxSessions: 200,
  /** A host serves sessions for at most this long, then drains and exits. */
  hostMaxAgeMs: 60 * 60_000,
  /** How long a controller waits for a new host to answer on its socket. */
  hostStartTimeoutMs: 20_000,
  /** A host's sessions reuse its toolchain probe for this long (a session probed them, a few file reads and stats, each). */
  hostToolchainsRecheckMs: 60_000,
  // job defaults when a job file is silent
  jobTimeoutMs: 60 * 60_000,
  stepTimeoutMs: 60 * 60_000,
  cpus: 2,
  memoryMiB: 2048,
  diskMiB: 4096,
  pids: 1024,
  logMiB: 64,
  /** Bound on one registry image pull (manifest check and `skopeo copy`), on the host. */
  imagePullTimeoutMs: 15 * 60_000,
  /** The oci sandbox's cache: built helpers, compiled seccomp, images (local layouts a job may name live below `images/`). */
  sandboxCacheDir: "/var/cache/deltaci",
} as const;

/** The version runners report when they register. */
export const DELTACI_VERSION = "0.1.0";

export type Defaults = typeof defaults;
