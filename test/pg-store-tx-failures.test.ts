/** PgStateStore.write when a transaction fails on the wire: a dropped connection, an error under a pipelined write. */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { Sql } from "postgres";
import { PgStateStore } from "../src/server/db/pg/pg-state-store.ts";
import { newKey } from "../src/server/secrets/key-file.ts";
import { SecretBox } from "../src/server/secrets/secret-box.ts";
import { createTestDatabase, type TestDatabase } from "./support/pg-test-db.ts";

let db: TestDatabase;
let store: PgStateStore;
const app = `deltaci-tx-failures-${process.pid}`;

before(async () => {
  db = await createTestDatabase();
  store = await PgStateStore.open({ url: db.url, box: new SecretBox([newKey()]), applicationName: app });
});
after(async () => {
  await store.close();
  await db.drop();
});

/** The transaction's own connection (PgOps keeps it as `q`). */
const txSql = (tx: unknown) => (tx as { q: Sql }).q;

void test("a transaction whose connection drops rejects (sql.begin rejected with CONNECTION_CLOSED)", { timeout: 20_000 }, async () => {
  const outcome = await store
    .write(async (tx) => {
      const [me] = await txSql(tx)`SELECT pg_backend_pid() AS pid`;
      // From another pooled connection: the server ends this transaction's backend.
      await store.client`SELECT pg_terminate_backend(${me?.pid as number})`;
      await tx.getRunner("r-none");
    })
    .then(() => "committed", (err: unknown) => `rejected: ${(err as { code?: string }).code ?? String(err)}`);
  assert.match(outcome, /^rejected/);
});

void test("a deadlock reported on a pipelined write is retried, though a later read saw 25P02", { timeout: 20_000 }, async () => {
  let calls = 0;
  const v = await store.write(async (tx) => {
    calls++;
    // As PgOps.put sends a write: not awaited; the transaction's next read runs behind it.
    if (calls === 1) await (tx as unknown as { send(q: unknown): Promise<void> }).send(txSql(tx)`DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$`);
    await tx.getRunner("r-none");
    return calls;
  });
  assert.equal(v, 2);
});

/** Ends every backend of this store's pool but the caller's, as a database restart or failover would. */
async function terminateOtherBackends(): Promise<number> {
  const rows = await store.client`SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = ${app} AND pid <> pg_backend_pid()`;
  return rows.length;
}

void test("the sweeper's lock connection dies: the next round takes the lock again, no uncaught error, the pool keeps working", { timeout: 20_000 }, async () => {
  // Before the postgres patch (patches/postgres+3.4.10.patch), the check on the dead reserved
  // connection threw "Cannot read properties of null (reading 'write')" from a setImmediate:
  // an uncaughtException that ended the server.
  assert.equal(await store.leadSweeper(), true);
  assert.ok((await terminateOtherBackends()) >= 1);
  await new Promise((r) => setTimeout(r, 200)); // the client sees the close
  assert.equal(await store.leadSweeper(), true, "the lock went with the backend and is taken again");
  assert.equal(await store.leadSweeper(), true);
  const [row] = await store.client`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND granted`;
  assert.equal(row?.n, 1, "one sweeper lock, held once");
  for (let i = 0; i < 5; i++) assert.equal(await store.write(async (tx) => (await tx.getRunner("r-none")) ?? "none"), "none");
});

void test("a transaction's backend dies while it runs more statements: it rejects, and the store's next writes succeed", { timeout: 20_000 }, async () => {
  for (let i = 0; i < 3; i++) {
    const outcome = await store
      .write(async (tx) => {
        const [me] = await txSql(tx)`SELECT pg_backend_pid() AS pid`;
        await store.client`SELECT pg_terminate_backend(${me?.pid as number})`;
        await new Promise((r) => setTimeout(r, 100)); // the close is seen before the next statement
        await tx.getRunner("r-none");
        await tx.getRunner("r-other");
      })
      .then(() => "committed", (err: unknown) => `rejected: ${(err as { code?: string }).code ?? String(err)}`);
    assert.match(outcome, /^rejected/);
    await new Promise((r) => setImmediate(r)); // any write left queued on the dead connection runs now
    assert.equal(await store.write(async (tx) => (await tx.getRunner("r-none")) ?? "none"), "none");
  }
});
