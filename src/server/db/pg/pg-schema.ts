/**
 * PostgreSQL schema, as versioned migrations (never edited once shipped), applied by every
 * replica at start under one advisory lock, so replicas starting together migrate once.
 * Times are BIGINT milliseconds, flags INTEGER 0/1 and JSON TEXT, as in the SQLite schema.
 */
import type { Migration } from "../migrations.ts";

/** Advisory lock keys (pg_advisory_*), one per role; any stable 64-bit numbers will do. */
export const PG_LOCKS = {
  migrate: 0x44_43_49_01,
  sweeper: 0x44_43_49_02,
  /** Blob marks (pg-gc.ts): shared by writers that reference a blob, exclusive while marks change. */
  blobGate: 0x44_43_49_03,
} as const;

export const pgMigrations: readonly Migration[] = [
  {
    version: 1,
    name: "initial",
    sql: `
CREATE SEQUENCE job_seq;
CREATE TABLE jobs(
  id TEXT PRIMARY KEY, run_id TEXT NOT NULL, name TEXT NOT NULL, seq BIGINT NOT NULL,
  spec TEXT NOT NULL, secrets TEXT NOT NULL, fork INTEGER NOT NULL,
  state TEXT NOT NULL, req_key TEXT NOT NULL, attempt INTEGER NOT NULL, max_attempts INTEGER NOT NULL,
  cancel_mode TEXT NOT NULL DEFAULT 'none', cancel_deadline BIGINT, log_limit BIGINT NOT NULL,
  failure TEXT, steps TEXT, unschedulable TEXT,
  created_at BIGINT NOT NULL, finished_at BIGINT
);
CREATE INDEX jobs_queue ON jobs(state, req_key, seq);
CREATE INDEX jobs_seq ON jobs(seq);
CREATE TABLE attempts(
  job_id TEXT NOT NULL, attempt INTEGER NOT NULL, state TEXT NOT NULL,
  runner_id TEXT, lease_id TEXT UNIQUE, lease_hash TEXT UNIQUE, expires_at BIGINT,
  started_at BIGINT, finished_at BIGINT, reason TEXT, ended_by TEXT,
  log_bytes BIGINT NOT NULL DEFAULT 0, log_truncated INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(job_id, attempt)
);
CREATE INDEX attempts_live_expiry ON attempts(expires_at) WHERE state IN ('leased','running','canceling');
CREATE TABLE transitions(
  id BIGSERIAL PRIMARY KEY, job_id TEXT NOT NULL, attempt INTEGER,
  at BIGINT NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE INDEX transitions_job ON transitions(job_id, id);
CREATE TABLE log_chunks(
  job_id TEXT NOT NULL, attempt INTEGER NOT NULL, start_off BIGINT NOT NULL, end_off BIGINT NOT NULL, data BYTEA NOT NULL,
  PRIMARY KEY(job_id, attempt, start_off)
);
CREATE TABLE runners(
  id TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, capabilities TEXT NOT NULL,
  session_hash TEXT NOT NULL UNIQUE, session_expires_at BIGINT NOT NULL, session_used INTEGER NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL
);
CREATE TABLE registrations(hash TEXT PRIMARY KEY, labels TEXT NOT NULL, expires_at BIGINT NOT NULL, used_at BIGINT);
CREATE TABLE artifacts(
  id TEXT PRIMARY KEY, job_id TEXT NOT NULL, attempt INTEGER NOT NULL, name TEXT NOT NULL,
  size BIGINT NOT NULL, sha256 TEXT NOT NULL, media_type TEXT NOT NULL, path TEXT, state TEXT NOT NULL,
  created_at BIGINT NOT NULL, UNIQUE(job_id, attempt, name)
);
CREATE TABLE kv(key TEXT PRIMARY KEY, value TEXT NOT NULL);
`,
  },
  {
    // Retention and GC (engine/collector.ts): blob marks, and indexes for finding what references a blob and what expired.
    version: 2,
    name: "retention-gc",
    sql: `
CREATE TABLE blob_marks(sha256 TEXT PRIMARY KEY, size BIGINT NOT NULL, marked_at BIGINT NOT NULL);
CREATE INDEX artifacts_sha256 ON artifacts(sha256);
CREATE INDEX jobs_source_sha256 ON jobs((spec::jsonb -> 'source' ->> 'sha256'));
CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX registrations_expiry ON registrations(expires_at);
CREATE INDEX runners_session_expiry ON runners(session_expires_at);
`,
  },
  {
    // Finished logs move to the blob store (engine/log-archive.ts): the blob's sha256, what is left to archive, what references a blob.
    version: 3,
    name: "log-archive",
    sql: `
ALTER TABLE attempts ADD COLUMN log_blob TEXT;
CREATE INDEX attempts_to_archive ON attempts(finished_at) WHERE log_blob IS NULL;
CREATE INDEX attempts_log_blob ON attempts(log_blob) WHERE log_blob IS NOT NULL;
`,
  },
];
