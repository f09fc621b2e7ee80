/**
 * StateStore on PostgreSQL (the `postgres` client): one pool per replica, a real transaction per
 * `write` (no group commit: the database serves several replicas), retried when PostgreSQL
 * breaks a deadlock or a serialization conflict. See pg-ops.ts for what a transaction locks.
 */
import postgres, { type PendingQuery, type Row, type Sql } from "postgres";
import type { ReplicaFeed, StateStore, StateTx, TxHooks } from "../../engine/state-store.ts";
import { SecretBox } from "../../secrets/secret-box.ts";
import { storedSecrets } from "../rows.ts";
import { PgOps } from "./pg-ops.ts";
import { NOTIFY_CHANNEL, PgReplicas } from "./pg-replicas.ts";
import { PG_LOCKS, pgMigrations } from "./pg-schema.ts";

/** Connections per replica's pool. */
const POOL_MAX = 10;
/** Times a transaction is run again after PostgreSQL aborted it to break a deadlock or conflict. */
const TX_RETRIES = 3;
const RETRYABLE = new Set(["40P01", "40001"]);

export interface PgStoreOptions {
  /** `postgres://USER@HOST:PORT/DB`. */
  url: string;
  box: SecretBox;
  /** Shown in pg_stat_activity. */
  applicationName?: string;
  poolMax?: number;
}

/** BIGINT (ms timestamps, sizes, counts) as a JS number: every value stays below 2^53. */
const bigintAsNumber = { to: 20, from: [20], serialize: (x: number) => String(x), parse: (x: string) => Number(x) };

export function connectPg(url: string, opts: { applicationName?: string; max?: number } = {}): Sql<{ bigint: number }> {
  return postgres(url, {
    max: opts.max ?? POOL_MAX,
    types: { bigint: bigintAsNumber },
    onnotice: () => {},
    connection: { application_name: opts.applicationName ?? "deltaci" },
  });
}

class PgTx extends PgOps implements StateTx {
  constructor(
    q: postgres.TransactionSql,
    box: SecretBox,
    private readonly hooks: TxHooks,
  ) {
    super(q, box, true);
  }
  afterCommit(fn: () => void): void {
    this.hooks.afterCommit(fn);
  }
  onRollback(fn: () => void): void {
    this.hooks.onRollback(fn);
  }
  broadcast(key: string): void {
    this.hooks.broadcast(key);
  }
  /** A write of the store's own (see `put`): sent now, answered by `settle`. */
  send(q: PendingQuery<Row[]>): Promise<void> {
    return this.put(q);
  }
}

export class PgStateStore extends PgOps implements StateStore {
  private readonly sql: Sql<{ bigint: number }>;
  private readonly replicas: PgReplicas;
  readonly shared = true;
  /** Called when an after-commit hook throws; the commit itself stands. */
  onHookError: (err: unknown) => void = () => {};

  private constructor(sql: Sql<{ bigint: number }>, box: SecretBox) {
    super(sql, box, false);
    this.sql = sql;
    this.replicas = new PgReplicas(sql);
  }

  /** Connects and applies pending migrations (one replica at a time, under an advisory lock). */
  static async open(o: PgStoreOptions): Promise<PgStateStore> {
    const sql = connectPg(o.url, { ...(o.applicationName === undefined ? {} : { applicationName: o.applicationName }), ...(o.poolMax === undefined ? {} : { max: o.poolMax }) });
    try {
      await migrate(sql);
    } catch (err) {
      await sql.end({ timeout: 1 });
      throw err;
    }
    return new PgStateStore(sql, o.box);
  }

  get client(): Sql<{ bigint: number }> {
    return this.sql;
  }

  async write<T>(fn: (tx: StateTx) => Promise<T>, opts?: { durable?: boolean }): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const after: Array<() => void> = [];
      const undo: Array<() => void> = [];
      const sent: string[] = [];
      const hooks: TxHooks = { afterCommit: (f) => after.push(f), onRollback: (f) => undo.push(f), broadcast: (k) => sent.push(k) };
      try {
        const value = await this.sql.begin(async (t) => {
          const tx = new PgTx(t, this.box, hooks);
          // Heartbeats: a lost one costs a re-send, not an fsync per beat (sent ahead of fn's queries, no round trip of its own).
          if (opts?.durable === false) await tx.send(t`SET LOCAL synchronous_commit = off`);
          const result = await fn(tx);
          tx.flush();
          // Delivered by PostgreSQL at commit, and only if it commits; sent behind the writes.
          if (sent.length > 0) await tx.send(t`SELECT pg_notify(${NOTIFY_CHANNEL}, p) FROM unnest(${this.replicas.payloads(sent)}::text[]) AS p`);
          // Every write's answer before COMMIT. Not after it: the client rejects some statements
          // without sending them (an undefined parameter, too many parameters), which aborts
          // nothing on the server, so a COMMIT sent behind them would commit the rest.
          await tx.settle();
          return result;
        });
        for (const f of after) {
          try {
            f();
          } catch (err) {
            this.onHookError(err);
          }
        }
        return value as T;
      } catch (err) {
        for (const f of undo) f();
        if (attempt < TX_RETRIES && RETRYABLE.has((err as { code?: string }).code ?? "")) continue;
        throw err;
      }
    }
  }

  async sealStoredSecrets(terminal: ReadonlySet<string>): Promise<{ resealed: number; deleted: number }> {
    const counts = { resealed: 0, deleted: 0 };
    await this.sql.begin(async (t) => {
      const rows = await t`SELECT id, state, secrets FROM jobs WHERE secrets <> '{}' ORDER BY id FOR UPDATE`;
      for (const r of rows) {
        const id = r.id as string;
        const text = r.secrets as string;
        const plain = SecretBox.isSealed(text) ? this.box.open(text, id) : text;
        if (terminal.has(r.state as string)) {
          await t`UPDATE jobs SET secrets = '{}' WHERE id = ${id}`;
          counts.deleted++;
        } else if (SecretBox.kidOf(text) !== this.box.activeKid) {
          await t`UPDATE jobs SET secrets = ${storedSecrets(this.box, id, JSON.parse(plain) as Record<string, string>)} WHERE id = ${id}`;
          counts.resealed++;
        }
      }
    });
    return counts;
  }

  async schemaVersion(): Promise<number> {
    const [r] = await this.sql`SELECT COALESCE(MAX(version), 0)::int AS v FROM schema_migrations`;
    return (r?.v as number | undefined) ?? 0;
  }

  subscribe(feed: ReplicaFeed): Promise<() => Promise<void>> {
    return this.replicas.subscribe(feed);
  }

  leadSweeper(): Promise<boolean> {
    return this.replicas.leadSweeper();
  }

  async close(): Promise<void> {
    await this.replicas.close();
    await this.sql.end({ timeout: 5 });
  }
}

async function migrate(sql: Sql<{ bigint: number }>): Promise<void> {
  await sql.begin(async (t) => {
    await t`SELECT pg_advisory_xact_lock(${PG_LOCKS.migrate})`;
    await t`CREATE TABLE IF NOT EXISTS schema_migrations(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`;
    const applied = new Set((await t`SELECT version FROM schema_migrations`).map((r) => r.version as number));
    for (const m of pgMigrations) {
      if (applied.has(m.version)) continue;
      await t.unsafe(m.sql);
      await t`INSERT INTO schema_migrations(version, name, applied_at) VALUES (${m.version}, ${m.name}, ${Date.now()})`;
    }
  });
}
