/**
 * The control plane's persistence seam. The engine calls these methods only inside
 * `write(fn)` (mutations, group-committed) or from read paths; SQLite implements it today.
 * A PostgreSQL implementation would run `write` as a real transaction per batch; its
 * methods would become async, which is the one change the engine would need.
 */
import type { CancelMode, JobState } from "../../protocol/schemas.ts";
import type { ArtifactRow, AttemptRow, DemandRow, JobRow, RegistrationRow, RunnerRow, TransitionRow } from "./types.ts";

export interface TxHooks {
  afterCommit(fn: () => void): void;
  onRollback(fn: () => void): void;
}

export interface StateStore {
  /** Runs `fn` in a transaction; resolves after the commit is durable (unless `durable: false`). */
  write<T>(fn: (hooks: TxHooks) => T, opts?: { durable?: boolean }): Promise<T>;
  close(): void;

  nextJobSeq(): number;
  insertJob(job: JobRow): void;
  getJob(id: string): JobRow | undefined;
  updateJob(id: string, patch: Partial<Omit<JobRow, "id">>): void;
  listJobs(filter: { state?: JobState; limit: number }): JobRow[];
  /** The oldest queued job of every requirement set. */
  queuedHeads(): Array<{ id: string; reqKey: string }>;
  queuedJobs(): JobRow[];
  cancelOverdue(now: number): JobRow[];
  demandRows(): DemandRow[];
  countJobsByState(): Array<{ state: JobState; count: number }>;

  insertAttempt(a: AttemptRow): void;
  getAttempt(jobId: string, attempt: number): AttemptRow | undefined;
  getAttemptByLeaseHash(hash: string): AttemptRow | undefined;
  updateAttempt(jobId: string, attempt: number, patch: Partial<Omit<AttemptRow, "jobId" | "attempt">>): void;
  listAttempts(jobId: string): AttemptRow[];
  expiredAttempts(now: number): AttemptRow[];
  /** Gives every live lease at least until `minExpiresAt` (after a restart). */
  extendLiveLeases(minExpiresAt: number): number;

  addTransition(jobId: string, t: TransitionRow): void;
  listTransitions(jobId: string): TransitionRow[];

  insertRunner(r: RunnerRow): void;
  getRunnerBySession(hash: string): RunnerRow | undefined;
  getRunner(id: string): RunnerRow | undefined;
  markSessionUsed(runnerId: string): void;

  insertRegistration(r: RegistrationRow): void;
  getRegistration(hash: string): RegistrationRow | undefined;
  markRegistrationUsed(hash: string, at: number): void;

  insertArtifact(a: ArtifactRow): void;
  getArtifact(id: string): ArtifactRow | undefined;
  findArtifact(jobId: string, attempt: number, name: string): ArtifactRow | undefined;
  setArtifactCommitted(id: string): void;
  deleteArtifact(id: string): void;
  listArtifacts(jobId: string, attempt: number): ArtifactRow[];

  /** Writes `parts` (in order, as one run of bytes) at `start` of an attempt's log. */
  appendLogChunk(jobId: string, attempt: number, start: number, parts: readonly Buffer[]): void;
  /** Chunks that end after `offset`, in order, at most `limit`. */
  readLogChunks(jobId: string, attempt: number, offset: number, limit: number): Array<{ start: number; data: Buffer }>;

  getKv(key: string): string | undefined;
  setKv(key: string, value: string): void;
}

export type { CancelMode };
