/**
 * The control plane's persistence seam, async so that SQLite (embedded, group-committed) and
 * PostgreSQL (several replicas on one database) implement it alike.
 *
 * Mutations run only inside `write(fn)`, on the `StateTx` it passes: every read there is part of
 * the transaction, and a store with concurrent writers (PostgreSQL) locks what it reads: the job
 * row guards the job, its attempts, artifacts and log; runner and registration rows guard
 * themselves; `oldestQueued` skips rows another transaction holds. Reads outside `write` (on the
 * store itself) see committed state and lock nothing.
 * `fn` must only await the `StateTx` (no other I/O): SQLite runs a batch of them in one transaction.
 */
import type { CancelMode, JobState } from "../../protocol/schemas.ts";
import type { ArtifactRow, AttemptRow, DemandRow, JobRow, RegistrationRow, RunnerRow, TransitionRow } from "./types.ts";

export interface TxHooks {
  afterCommit(fn: () => void): void;
  onRollback(fn: () => void): void;
  /** Other replicas' `subscribe` handlers get `key` once this commits (a no-op on an unshared store). */
  broadcast(key: string): void;
}

/** What a replica hears of the others (StateStore.subscribe). */
export interface ReplicaFeed {
  /** A key another replica broadcast in a transaction that committed. */
  onKey(key: string): void;
  /** The feed (re)connected: anything broadcast meanwhile may be lost, rescan. */
  onConnect(): void;
}

export interface JobListFilter {
  state?: JobState;
  name?: string;
  label?: string;
  beforeSeq?: number;
  limit: number;
}

/** Rows of the state, read and written the same way in and out of a transaction. */
export interface StateOps {
  nextJobSeq(): Promise<number>;
  insertJob(job: JobRow): Promise<void>;
  getJob(id: string): Promise<JobRow | undefined>;
  updateJob(id: string, patch: Partial<Omit<JobRow, "id">>): Promise<void>;
  /** Newest first; `name` matches a substring, `label` one of `runsOn.labels`, `beforeSeq` pages. */
  listJobs(filter: JobListFilter): Promise<JobRow[]>;
  /** Requirement sets that have queued jobs (a superset is allowed). */
  queuedReqKeys(): Promise<string[]>;
  /** The oldest queued job with one of `reqKeys` (in a transaction: one no other transaction holds). */
  oldestQueued(reqKeys: readonly string[]): Promise<JobRow | undefined>;
  queuedJobs(): Promise<JobRow[]>;
  cancelOverdue(now: number): Promise<JobRow[]>;
  demandRows(): Promise<DemandRow[]>;
  countJobsByState(): Promise<Array<{ state: JobState; count: number }>>;

  insertAttempt(a: AttemptRow): Promise<void>;
  getAttempt(jobId: string, attempt: number): Promise<AttemptRow | undefined>;
  getAttemptByLeaseHash(hash: string): Promise<AttemptRow | undefined>;
  /** The attempt of lease hash `hash` and its job (`job` undefined if the job row is gone), as getAttemptByLeaseHash then getJob would read them. */
  getLeasedAttempt(hash: string): Promise<{ a: AttemptRow; job: JobRow | undefined } | undefined>;
  updateAttempt(jobId: string, attempt: number, patch: Partial<Omit<AttemptRow, "jobId" | "attempt">>): Promise<void>;
  listAttempts(jobId: string): Promise<AttemptRow[]>;
  expiredAttempts(now: number): Promise<AttemptRow[]>;
  /** Gives every live lease at least until `minExpiresAt` (after a restart). */
  extendLiveLeases(minExpiresAt: number): Promise<number>;

  addTransition(jobId: string, t: TransitionRow): Promise<void>;
  listTransitions(jobId: string): Promise<TransitionRow[]>;

  insertRunner(r: RunnerRow): Promise<void>;
  getRunnerBySession(hash: string): Promise<RunnerRow | undefined>;
  getRunner(id: string): Promise<RunnerRow | undefined>;
  markSessionUsed(runnerId: string): Promise<void>;

  insertRegistration(r: RegistrationRow): Promise<void>;
  getRegistration(hash: string): Promise<RegistrationRow | undefined>;
  markRegistrationUsed(hash: string, at: number): Promise<void>;

  insertArtifact(a: ArtifactRow): Promise<void>;
  getArtifact(id: string): Promise<ArtifactRow | undefined>;
  findArtifact(jobId: string, attempt: number, name: string): Promise<ArtifactRow | undefined>;
  setArtifactCommitted(id: string): Promise<void>;
  deleteArtifact(id: string): Promise<void>;
  listArtifacts(jobId: string, attempt: number): Promise<ArtifactRow[]>;

  /**
   * Writes `parts` (in order, as one run of bytes) at `start` of an attempt's log. `staged`: the
   * same request's bytes staged before the transaction (stageLogBytes); a store may skip writing
   * what it covers.
   */
  appendLogChunk(jobId: string, attempt: number, start: number, parts: readonly Buffer[], staged?: StagedLogBytes | null): Promise<void>;
  /** Committed chunks that end after `offset`, in order, at most `limit` (callers loop until empty). */
  readLogChunks(jobId: string, attempt: number, offset: number, limit: number): Promise<Array<{ start: number; data: Buffer }>>;

  getKv(key: string): Promise<string | undefined>;
  setKv(key: string, value: string): Promise<void>;

  // ---- retention and garbage collection (engine/collector.ts) ----
  /**
   * Is `sha256` marked for collection? A writer about to reference a blob asks inside its
   * transaction (then gets E_UNAVAILABLE): on PostgreSQL this takes the blob gate shared, so it
   * waits for a marking or clearing transaction and sees its marks.
   */
  blobCollecting(sha256: string): Promise<boolean>;
  /** Bumped by every transaction that marks or clears blobs: a writer that checked a blob's presence before it knows whether that still holds. */
  gcEpoch(): Promise<number>;
  /** Terminal jobs that finished before `finishedBefore`, oldest first, at most `limit`. */
  expiredJobIds(finishedBefore: number, limit: number): Promise<string[]>;
  /**
   * Deletes these jobs (those still terminal and finished before `finishedBefore`) with their attempts, transitions, logs and artifact rows.
   * `logBytes`: the live log bytes freed (an archived log's blob is collected, and counted, as a blob).
   */
  deleteJobs(ids: readonly string[], finishedBefore: number): Promise<{ jobs: number; logBytes: number }>;
  /** Registration tokens that expired before `now` (used or not). */
  deleteExpiredRegistrations(now: number): Promise<number>;
  /** Runners whose session expired before `now` and that hold no live attempt. */
  deleteDeadRunners(now: number): Promise<number>;
  /**
   * Of `candidates`, marks those no artifact row, no job's source and no archived log references (takes the blob
   * gate exclusively on PostgreSQL); returns the ones it marked.
   */
  markUnreferencedBlobs(candidates: readonly BlobRef[], now: number): Promise<BlobRef[]>;
  /** Marked blobs (a pass that stopped between marking and clearing leaves some). */
  blobMarks(): Promise<BlobRef[]>;
  clearBlobMarks(sha256s: readonly string[]): Promise<void>;

  // ---- log archive (engine/log-archive.ts) ----
  /** Attempts that ended (not live) before `endedBefore` and whose log is not archived yet, oldest first, at most `limit`. */
  unarchivedLogs(endedBefore: number, limit: number): Promise<Array<{ jobId: string; attempt: number }>>;
  /**
   * Records that blob `sha256` holds the attempt's whole log and drops the live copy (chunks,
   * and on SQLite its file after the commit). Only inside `write`, after reading the attempt there.
   */
  setLogArchived(jobId: string, attempt: number, sha256: string): Promise<void>;
}

export interface BlobRef {
  sha256: string;
  size: number;
}

/** What `write(fn)` hands to `fn`: the transaction's reads and writes, and its commit hooks. */
export interface StateTx extends StateOps, TxHooks {}

export interface StateStore extends StateOps {
  /** Runs `fn` in a transaction; resolves after the commit is durable (unless `durable: false`). */
  write<T>(fn: (tx: StateTx) => Promise<T>, opts?: { durable?: boolean }): Promise<T>;
  /**
   * Start-up pass over stored secrets (secrets-at-rest.ts): values sealed with an older key or
   * stored plain are sealed with the active key; a terminal job's secrets are deleted.
   */
  sealStoredSecrets(terminal: ReadonlySet<string>): Promise<{ resealed: number; deleted: number }>;
  schemaVersion(): Promise<number>;
  /** Other server processes may share this state (replicas): wake-ups must cross processes. */
  readonly shared: boolean;
  /** Listens for other replicas' broadcasts until the returned stop is called (unshared: never calls). */
  subscribe(feed: ReplicaFeed): Promise<() => Promise<void>>;
  /** Is this replica the one that sweeps? Takes the role when it is free (unshared: always true). */
  leadSweeper(): Promise<boolean>;
  /**
   * A large append's bytes, written (and at full durability fdatasynced) at `start` of an
   * attempt's log before its transaction, off the event loop: the store then need not write
   * them in the transaction. Bytes past the committed end are never read, so nothing changes
   * until a commit covers them. Null when the store cannot (a log in rows, not begun yet, or a
   * store without log files): the transaction writes them as usual.
   */
  stageLogBytes?(jobId: string, attempt: number, start: number, parts: readonly Buffer[]): Promise<StagedLogBytes | null>;
  /**
   * The attempt of lease hash `hash` as last committed, without waiting for that commit's sync
   * (a store that syncs after its commits makes its other reads wait): only for a choice the
   * append's transaction checks again (where to stage its bytes), never for an answer. A store
   * whose reads never wait need not have it.
   */
  peekAttemptByLeaseHash?(hash: string): Promise<AttemptRow | undefined>;
  close(): Promise<void>;
}

/** Bytes staged ahead of an append's transaction (StateStore.stageLogBytes): `[start, end)`, durable as the store's durability says. */
export interface StagedLogBytes {
  start: number;
  end: number;
}

export type { CancelMode };
