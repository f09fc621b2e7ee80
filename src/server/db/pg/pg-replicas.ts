/**
 * What replicas on one PostgreSQL database share besides rows: wake-ups (NOTIFY in the committing
 * transaction, one LISTEN connection per replica, which `postgres` re-opens after a drop) and the
 * sweeper role (a session advisory lock held on one reserved connection: it frees itself when
 * that replica dies or loses its connection).
 */
import { randomBytes } from "node:crypto";
import type { ReservedSql, Sql } from "postgres";
import type { ReplicaFeed } from "../../engine/state-store.ts";
import { PG_LOCKS } from "./pg-schema.ts";

export const NOTIFY_CHANNEL = "deltaci";
/** Between the replica's id and its keys. */
const SEP = "|";
/** Between the keys of one payload (keys hold ids, `:` and digits, never a space). */
const KEY_SEP = " ";
/** NOTIFY payloads are limited to 8000 bytes: a transaction's keys go in payloads of at most this many characters. */
const PAYLOAD_MAX = 7000;

export class PgReplicas {
  /** Tags this replica's NOTIFYs, so it skips its own. */
  readonly id = randomBytes(6).toString("hex");
  private leader: ReservedSql<{ bigint: number }> | null = null;

  constructor(private readonly sql: Sql<{ bigint: number }>) {}

  /** A transaction's keys in as few payloads as fit (usually one): a NOTIFY each, heard by every listener. */
  payloads(keys: readonly string[]): string[] {
    const out: string[] = [];
    let cur = "";
    for (const k of new Set(keys)) {
      if (cur !== "" && cur.length + k.length >= PAYLOAD_MAX) {
        out.push(cur);
        cur = "";
      }
      cur = cur === "" ? `${this.id}${SEP}${k}` : `${cur}${KEY_SEP}${k}`;
    }
    if (cur !== "") out.push(cur);
    return out;
  }

  async subscribe(feed: ReplicaFeed): Promise<() => Promise<void>> {
    const sub = await this.sql.listen(
      NOTIFY_CHANNEL,
      (payload) => {
        const at = payload.indexOf(SEP);
        if (at < 0 || payload.slice(0, at) === this.id) return;
        for (const k of payload.slice(at + 1).split(KEY_SEP)) feed.onKey(k);
      },
      () => feed.onConnect(),
    );
    return () => sub.unlisten();
  }

  /** Holds (or takes, when free) the sweeper lock; false when another replica holds it. */
  async leadSweeper(): Promise<boolean> {
    if (this.leader) {
      try {
        const [r] = await this.leader`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND objid = ${PG_LOCKS.sweeper}`;
        if (r?.n === 1) return true;
      } catch {
        // The connection is gone, and the lock with it.
      }
      this.dropLeader();
    }
    const conn = await this.sql.reserve();
    try {
      const [r] = await conn`SELECT pg_try_advisory_lock(${PG_LOCKS.sweeper}) AS ok`;
      if (r?.ok === true) {
        this.leader = conn;
        return true;
      }
    } catch {
      // Not leading this round; try again on the next.
    }
    conn.release();
    return false;
  }

  private dropLeader(): void {
    const conn = this.leader;
    this.leader = null;
    if (!conn) return;
    // Unlocking on a live connection lets another replica take over at once; a dead one already has.
    conn`SELECT pg_advisory_unlock_all()`.then(() => conn.release(), () => conn.release());
  }

  async close(): Promise<void> {
    if (!this.leader) return;
    const conn = this.leader;
    this.leader = null;
    await conn`SELECT pg_advisory_unlock_all()`.catch(() => undefined);
    conn.release();
  }
}
