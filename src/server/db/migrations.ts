/** Versioned schema migrations; applied in order inside one transaction each, never edited once shipped. */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const migrations: readonly Migration[] = [
  {
    version: 1,
    name: "initial",
    sql: `
CREATE TABLE jobs(
  id TEXT PRIMARY KEY, run_id TEXT NOT NULL, name TEXT NOT NULL, seq INTEGER NOT NULL,
  spec TEXT NOT NULL, secrets TEXT NOT NULL, fork INTEGER NOT NULL,
  state TEXT NOT NULL, req_key TEXT NOT NULL, attempt INTEGER NOT NULL, max_attempts INTEGER NOT NULL,
  cancel_mode TEXT NOT NULL DEFAULT 'none', cancel_deadline INTEGER, log_limit INTEGER NOT NULL,
  failure TEXT, steps TEXT, unschedulable TEXT,
  created_at INTEGER NOT NULL, finished_at INTEGER
);
CREATE INDEX jobs_state_seq ON jobs(state, seq);
CREATE INDEX jobs_seq ON jobs(seq);
CREATE TABLE attempts(
  job_id TEXT NOT NULL, attempt INTEGER NOT NULL, state TEXT NOT NULL,
  runner_id TEXT, lease_id TEXT UNIQUE, lease_hash TEXT UNIQUE, expires_at INTEGER,
  started_at INTEGER, finished_at INTEGER, reason TEXT, ended_by TEXT,
  log_bytes INTEGER NOT NULL DEFAULT 0, log_truncated INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(job_id, attempt)
);
CREATE INDEX attempts_state_expiry ON attempts(state, expires_at);
CREATE TABLE transitions(
  id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, attempt INTEGER,
  at INTEGER NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE INDEX transitions_job ON transitions(job_id, id);
CREATE TABLE log_chunks(
  job_id TEXT NOT NULL, attempt INTEGER NOT NULL, start_off INTEGER NOT NULL, end_off INTEGER NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY(job_id, attempt, start_off)
) WITHOUT ROWID;
CREATE TABLE runners(
  id TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, capabilities TEXT NOT NULL,
  session_hash TEXT NOT NULL UNIQUE, session_expires_at INTEGER NOT NULL, session_used INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL
);
CREATE TABLE registrations(hash TEXT PRIMARY KEY, labels TEXT NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER);
CREATE TABLE artifacts(
  id TEXT PRIMARY KEY, job_id TEXT NOT NULL, attempt INTEGER NOT NULL, name TEXT NOT NULL,
  size INTEGER NOT NULL, sha256 TEXT NOT NULL, media_type TEXT NOT NULL, state TEXT NOT NULL,
  created_at INTEGER NOT NULL, UNIQUE(job_id, attempt, name)
);
CREATE TABLE kv(key TEXT PRIMARY KEY, value TEXT NOT NULL);
`,
  },
  {
    version: 2,
    name: "queue-head-index",
    sql: "CREATE INDEX jobs_queue ON jobs(state, req_key, seq);",
  },
  {
    // 4 KiB chunks are large rows: a rowid table keeps them out of the key b-tree.
    version: 3,
    name: "log-chunks-rowid",
    sql: `
CREATE TABLE log_chunks_v3(job_id TEXT NOT NULL, attempt INTEGER NOT NULL, start_off INTEGER NOT NULL, end_off INTEGER NOT NULL, data BLOB NOT NULL);
INSERT INTO log_chunks_v3(job_id, attempt, start_off, end_off, data) SELECT job_id, attempt, start_off, end_off, data FROM log_chunks;
DROP TABLE log_chunks;
ALTER TABLE log_chunks_v3 RENAME TO log_chunks;
CREATE UNIQUE INDEX log_chunks_key ON log_chunks(job_id, attempt, start_off);
`,
  },
  {
    // jobs_queue (state, req_key, seq) serves every by-state query; one index less to update per move.
    version: 4,
    name: "drop-jobs-state-seq",
    sql: "DROP INDEX jobs_state_seq;",
  },
  {
    // A single-file artifact keeps its file's relative path (downloads restore name and extension).
    version: 5,
    name: "artifact-path",
    sql: "ALTER TABLE artifacts ADD COLUMN path TEXT;",
  },
  {
    // Retention and GC (engine/collector.ts): blob marks, and indexes for finding what references a blob and what expired.
    version: 6,
    name: "retention-gc",
    sql: `
CREATE TABLE blob_marks(sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, marked_at INTEGER NOT NULL);
CREATE INDEX artifacts_sha256 ON artifacts(sha256);
CREATE INDEX jobs_source_sha256 ON jobs(json_extract(spec, '$.source.sha256'));
CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX registrations_expiry ON registrations(expires_at);
CREATE INDEX runners_session_expiry ON runners(session_expires_at);
`,
  },
  {
    // Finished logs move to the blob store (engine/log-archive.ts): the blob's sha256, what is left to archive, what references a blob.
    version: 7,
    name: "log-archive",
    sql: `
ALTER TABLE attempts ADD COLUMN log_blob TEXT;
CREATE INDEX attempts_to_archive ON attempts(finished_at) WHERE log_blob IS NULL;
CREATE INDEX attempts_log_blob ON attempts(log_blob) WHERE log_blob IS NOT NULL;
`,
  },
];
