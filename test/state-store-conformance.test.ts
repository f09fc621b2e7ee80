/** One StateStore conformance suite (support/state-store-conformance.ts), run on SQLite and on PostgreSQL. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PgStateStore } from "../src/server/db/pg/pg-state-store.ts";
import { SqliteStateStore } from "../src/server/db/sqlite-state-store.ts";
import { newKey } from "../src/server/secrets/key-file.ts";
import { SecretBox } from "../src/server/secrets/secret-box.ts";
import { createTestDatabase } from "./support/pg-test-db.ts";
import { stateStoreConformance } from "./support/state-store-conformance.ts";

const box = () => new SecretBox([newKey()]);

stateStoreConformance(
  {
    name: "sqlite",
    open: async (b) => {
      const dir = await mkdtemp(join(tmpdir(), "deltaci-store-"));
      const s = new SqliteStateStore(join(dir, "state.db"), "normal", b);
      return { a: s, b: s, close: async () => {
        await s.close();
        await rm(dir, { recursive: true, force: true });
      } };
    },
  },
  box,
);

stateStoreConformance(
  {
    name: "postgres",
    open: async (b) => {
      const db = await createTestDatabase();
      const [a, c] = await Promise.all([PgStateStore.open({ url: db.url, box: b }), PgStateStore.open({ url: db.url, box: b })]);
      return { a, b: c, close: async () => {
        await Promise.all([a.close(), c.close()]);
        await db.drop();
      } };
    },
  },
  box,
);
