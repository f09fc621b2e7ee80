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
