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
  jsonBodyLimitBytes: 1024 * 1024,
  logChunkLimitBytes: 1024 * 1024,
  artifactMaxBytes: 4 * 1024 * 1024 * 1024,
  // runner
  logFlushIntervalMs: 250,
  logFlushBytes: 256 * 1024,
  cancelGraceMs: 10_000,
  requestTimeoutMs: 15_000,
  runnerIdleTimeoutMs: 5 * 60_000,
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

export type Defaults = typeof defaults;
