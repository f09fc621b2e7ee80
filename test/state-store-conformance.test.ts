/** One StateStore conformance suite (support/state-store-conformance.ts), run on SQLite and on PostgreSQL. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PgStateStore } from "../src/server/db/pg/pg-state-store.ts";
import { SqliteStateStore } from "../src/server/db/sqlite-state-store.ts";
import { newKey } from "../src/server/secrets/key-file.ts";
import { SecretBox } from "../src/server/secrets/secret-box.ts";
import { createTestDatabase } from "./support/pg-test-db.ts";
import { stateStoreConformance, type StoreFactory } from "./support/state-store-conformance.ts";
import { markWaitsForWriter, stateStoreGcConformance } from "./support/state-store-gc-conformance.ts";
import { stateStoreArchiveConformance } from "./support/state-store-archive-conformance.ts";

const box = () => new SecretBox([newKey()]);

const sqlite: StoreFactory = {
  name: "sqlite",
  open: async (b) => {
    const dir = await mkdtemp(join(tmpdir(), "deltaci-store-"));
    const s = new SqliteStateStore(join(dir, "state.db"), "normal", b);
    return { a: s, b: s, close: async () => {
      await s.close();
      await rm(dir, { recursive: true, force: true });
    } };
  },
};
stateStoreConformance(sqlite, box);
stateStoreGcConformance(sqlite, box);
stateStoreArchiveConformance(sqlite, box);

const postgres: StoreFactory = {
  name: "postgres",
  open: async (b) => {
    const db = await createTestDatabase();
    const [a, c] = await Promise.all([PgStateStore.open({ url: db.url, box: b }), PgStateStore.open({ url: db.url, box: b })]);
    return { a, b: c, close: async () => {
      await Promise.all([a.close(), c.close()]);
      await db.drop();
    } };
  },
};
stateStoreConformance(postgres, box);
stateStoreArchiveConformance(postgres, box);
stateStoreGcConformance(postgres, box, {
  race: (fx) => markWaitsForWriter(fx, async () => {
    // The marking transaction is queued behind the writer's shared hold on the blob gate.
    const sql = (fx.a as PgStateStore).client;
    while ((await sql`SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).length === 0) await new Promise((r) => setTimeout(r, 10));
  }),
});
