/**
 * SQLite connection (better-sqlite3, WAL) with versioned migrations and group commit.
 *
 * Every mutation goes through `write(fn)`: operations queued during one turn of the event loop
 * run back to back in ONE transaction and are acknowledged only after that transaction committed.
 * One failing op does not undo the others: most fail before they write (a check), and cost
 * nothing; one that wrote spoils the transaction, which is rolled back and run again without it
 * (ops must be re-runnable, as on PostgreSQL, which retries them on conflicts). No savepoint per
 * op: it cost two statements and a copy of every page the op touched. With
 * `durability: "full"` the WAL is fdatasync'ed after the commit, on the thread pool (the commit
 * itself runs at `synchronous = NORMAL`), and the batch is acknowledged, and its after-commit
 * hooks run, only once that sync is done: an acknowledged write survives SIGKILL and power loss,
 * N concurrent requests share one fsync, and the event loop reads and answers requests
 * meanwhile; the ops queued during a sync run as one batch after it. Reads outside a batch wait for it too
 * (`durable()`), so nothing not yet durable is ever seen.
 * Ops marked `durable: false` (heartbeats) ask for no sync of their own (they still wait for one
 * already due). `durability: "none"` (a throwaway state: `deltaci run`'s) never syncs.
 */
import Database from "better-sqlite3";
import { closeSync, fdatasync, fsyncSync, openSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import type { Durability } from "../options.ts";
import { migrations } from "./migrations.ts";

export type Db = Database.Database;

/**
 * better-sqlite3's addon where its install builds it (a release build, else a debug one), given
 * to `new Database`: without it the `bindings` package finds it by trial, a dozen failing requires
 * (~10 ms of a `deltaci run`'s server start), and inside our bundle `bindings` would search from
 * the bundle's path, not the package's. Neither there: an error that says what to do.
 */
function addonOptions(): Database.Options {
  const require = createRequire(import.meta.url);
  for (const build of ["Release", "Debug"]) {
    try {
      return { nativeBinding: require.resolve(`better-sqlite3/build/${build}/better_sqlite3.node`) };
    } catch {}
  }
  throw new Error("better-sqlite3's native addon is not built (no build/Release or build/Debug in its package): run `npm rebuild better-sqlite3` or `bash scripts/setup.sh`");
}

import type { TxHooks } from "../engine/state-store.ts";

interface PendingOp {
  fn: (hooks: TxHooks) => unknown;
  durable: boolean;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

interface OpOutcome {
  ok: boolean;
  value: unknown;
  after: Array<() => void>;
  undo: Array<() => void>;
}

export class SqliteDatabase {
  readonly db: Db;
  private queue: PendingOp[] = [];
  private scheduled = false;
  /** A batch is running (its ops may await): the next one starts when it ends. */
  private running: Promise<void> | null = null;
  private closed = false;
  /** Number of group commits and ops they carried (metrics, bench). */
  readonly stats = { commits: 0, ops: 0 };

  /** Runs once per batch right before its COMMIT (e.g. fsync of files the batch wrote); a throw rolls the batch back. */
  beforeCommit: (() => void) | null = null;

  /** Called when an after-commit hook throws; the commit itself stands. */
  onHookError: (err: unknown) => void = () => {};

  /** Transaction control, prepared once (exec() would re-parse the SQL on every call). */
  private tx!: Record<"begin" | "commit" | "rollback" | "totalChanges", Database.Statement>;

  /** The WAL, open for the post-commit fdatasync (full durability only). */
  private walFd: number | null = null;
  /** Called with the sync's error (or undefined) once the sync running now is done. */
  private syncing: Array<(err: unknown) => void> | null = null;
  /** Waiting for the next sync: commits made after the running one started. */
  private unsynced: Array<(err: unknown) => void> = [];
  /** A failed sync: what it covered may be lost, and a later sync that succeeds would not say so; every write fails from then on. */
  private syncFailed: Error | null = null;

  constructor(file: string, durability: Durability) {
    this.db = new Database(file, addonOptions());
    // Set before the switch to WAL, which syncs too unless `synchronous = OFF`; migrations
    // commit with it too (full: in place, before the post-commit syncs take over).
    this.db.pragma(`synchronous = ${durability === "full" ? "FULL" : durability === "normal" ? "NORMAL" : "OFF"}`);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("foreign_keys = ON");
    // Deleted content (a terminal job's sealed secrets) is overwritten, not left in free pages.
    this.db.pragma("secure_delete = ON");
    this.db.pragma("busy_timeout = 5000");
    // Fewer, larger checkpoints: a page rewritten by many commits is copied to the db once.
    this.db.pragma("wal_autocheckpoint = 8192");
    // 8 MiB of page cache: the hot pages (queue head, live attempts, recent rows) fit, and the
    // end of every write transaction that grows the file (pcache1TruncateUnsafe) walks a hash
    // table sized by the pages cached: at 64 MiB that walk was ~4% of a busy server's CPU.
    // Pages past it are read from the OS page cache.
    this.db.pragma("cache_size = -8192");
    this.db.pragma("temp_store = MEMORY");
    this.migrate();
    if (durability === "full") {
      // From here the commits leave the WAL to the OS and `requestSync` makes it durable
      // (set before any statement is prepared: the switch expires prepared statements).
      this.db.pragma("synchronous = NORMAL");
      this.walFd = openSync(`${file}-wal`, "r");
      fsyncSync(this.walFd);
      const dir = openSync(dirname(file), "r");
      try {
        fsyncSync(dir);
      } finally {
        closeSync(dir);
      }
    }
    const p = (sql: string) => this.db.prepare(sql);
    this.tx = {
      begin: p("BEGIN IMMEDIATE"), commit: p("COMMIT"), rollback: p("ROLLBACK"), totalChanges: p("SELECT total_changes()").pluck(),
    };
  }

  private migrate(): void {
    this.db.exec("CREATE TABLE IF NOT EXISTS schema_migrations(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)");
    const applied = new Set(this.db.prepare("SELECT version FROM schema_migrations").pluck().all() as number[]);
    for (const m of migrations) {
      if (applied.has(m.version)) continue;
      this.db.transaction(() => {
        this.db.exec(m.sql);
        this.db.prepare("INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)").run(m.version, m.name, Date.now());
      })();
    }
  }

  schemaVersion(): number {
    return (this.db.prepare("SELECT MAX(version) FROM schema_migrations").pluck().get() as number | null) ?? 0;
  }

  /**
   * Queue a mutation; resolves with its result once durably committed (see file comment).
   * An async `fn` must await only this database's work (the transaction stays open meanwhile).
   */
  write<T>(fn: (hooks: TxHooks) => T | Promise<T>, opts: { durable?: boolean } = {}): Promise<T> {
    if (this.closed) return Promise.reject(new Error("database closed"));
    if (this.syncFailed !== null) return Promise.reject(this.syncFailed);
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ fn, durable: opts.durable ?? true, resolve: resolve as (v: unknown) => void, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    // While a sync runs, ops gather for one batch after it: they would wait for the sync after
    // it anyway, and one commit of them all writes fewer pages than several.
    if (this.scheduled || this.running || this.syncing) return;
    this.scheduled = true;
    setImmediate(() => void this.flush());
  }

  /** Runs every queued op now, in one transaction (after the batch running now, if any). */
  async flush(): Promise<void> {
    this.scheduled = false;
    if (this.running) await this.running;
    if (this.queue.length === 0) return;
    const done = this.runBatch();
    this.running = done;
    try {
      await done;
    } finally {
      this.running = null;
      if (this.queue.length > 0) this.schedule();
    }
  }

  private async runBatch(): Promise<void> {
    let ops = this.queue;
    this.queue = [];
    if (ops.length === 0) return;
    const spoiled: Array<{ op: PendingOp; err: unknown }> = [];
    let outcomes: OpOutcome[] = [];
    try {
      for (;;) {
        outcomes = [];
        const spoiler = await this.runOps(ops, outcomes);
        if (spoiler < 0) break;
        // That op failed after writing: roll everything back and run the others again without it.
        if (this.db.inTransaction) this.tx.rollback.run();
        for (const o of outcomes) for (const f of o.undo) f();
        spoiled.push({ op: ops[spoiler] as PendingOp, err: outcomes[spoiler]?.value });
        ops = ops.filter((_, i) => i !== spoiler);
        if (ops.length === 0) break;
      }
      if (this.db.inTransaction) {
        this.beforeCommit?.();
        this.tx.commit.run();
      }
    } catch (err) {
      if (this.db.inTransaction) this.tx.rollback.run();
      for (const o of outcomes) if (o.ok) for (const f of o.undo) f();
      for (const op of ops) op.reject(err);
      for (const s of spoiled) s.op.reject(s.err);
      return;
    }
    const committed = outcomes.some((o) => o.ok);
    if (committed) this.stats.commits++;
    this.stats.ops += ops.length + spoiled.length;
    const settle = (syncErr: unknown) => {
      ops.forEach((op, i) => {
        const r = outcomes[i];
        if (!r) return;
        if (syncErr !== undefined) op.reject(syncErr);
        else if (r.ok) {
          for (const f of r.after) {
            try {
              f();
            } catch (err) {
              this.onHookError(err);
            }
          }
          op.resolve(r.value);
        } else op.reject(r.value);
      });
      for (const s of spoiled) s.op.reject(s.err);
    };
    this.afterSync(settle, committed && ops.some((op, i) => op.durable && outcomes[i]?.ok === true));
  }

  /**
   * Runs `fn` once every commit made so far is durable: now when nothing waits for a sync (or
   * there is no post-commit sync), after the running sync when it covers them, else after the
   * next one (`needSync`: this commit needs one of its own).
   */
  private afterSync(fn: (err: unknown) => void, needSync: boolean): void {
    if (this.walFd === null) return fn(undefined);
    if (needSync || this.unsynced.length > 0) {
      this.unsynced.push(fn);
      this.requestSync();
    } else if (this.syncing) this.syncing.push(fn);
    else fn(undefined);
  }

  /** One fdatasync of the WAL at a time, for every commit made before it starts. */
  private requestSync(): void {
    if (this.syncing || this.unsynced.length === 0 || this.walFd === null) return;
    const group = this.unsynced;
    this.unsynced = [];
    this.syncing = group;
    fdatasync(this.walFd, (err) => {
      this.syncing = null;
      if (err) this.syncFailed ??= new Error(`fdatasync of the WAL failed: ${err.message}`, { cause: err });
      for (const f of group) f(err ? this.syncFailed : undefined);
      this.requestSync();
      if (this.queue.length > 0) this.schedule();
    });
  }

  /** Resolves once every commit made so far is durable (null: it already is); reads outside a batch wait on it. */
  durable(): Promise<void> | null {
    if (this.syncing === null && this.unsynced.length === 0) return null;
    return new Promise((resolve, reject) => this.afterSync((err) => (err === undefined ? resolve() : reject(err)), false));
  }

  /**
   * Runs `ops` in order in a new transaction, adding their outcomes to `outcomes`. An op that
   * fails before writing anything undoes its own hooks and the rest go on; one that wrote (or
   * whose failure ended the transaction) stops the run: returns its index (-1: none). A lone op
   * that fails is rolled back with the transaction.
   */
  private async runOps(ops: readonly PendingOp[], outcomes: OpOutcome[]): Promise<number> {
    this.tx.begin.run();
    for (let i = 0; i < ops.length; i++) {
      const after: Array<() => void> = [];
      const undo: Array<() => void> = [];
      const hooks: TxHooks = { afterCommit: (f) => after.push(f), onRollback: (f) => undo.push(f), broadcast: () => {} };
      const changes = ops.length > 1 ? (this.tx.totalChanges.get() as number) : 0;
      try {
        outcomes.push({ ok: true, value: await (ops[i] as PendingOp).fn(hooks), after, undo });
      } catch (err) {
        outcomes.push({ ok: false, value: err, after: [], undo });
        if (ops.length === 1 || !this.db.inTransaction || this.tx.totalChanges.get() !== changes) return i;
        for (const f of undo) f();
        undo.length = 0;
      }
    }
    return -1;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    this.closed = true;
    await this.durable();
    this.db.pragma("wal_checkpoint(TRUNCATE)");
    this.db.close();
    if (this.walFd !== null) closeSync(this.walFd);
    this.walFd = null;
  }
}
