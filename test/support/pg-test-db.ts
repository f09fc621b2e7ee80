/**
 * Throwaway PostgreSQL databases for tests, on the cluster `scripts/test-services.sh start`
 * started (DELTACI_TEST_DATABASE_URL). A test that needs one and finds no URL fails, loudly.
 */
import { randomBytes } from "node:crypto";
import { connectPg } from "../../src/server/db/pg/pg-state-store.ts";

export function testDatabaseUrl(): string {
  const url = process.env.DELTACI_TEST_DATABASE_URL;
  if (!url) {
    throw new Error(
      "DELTACI_TEST_DATABASE_URL is not set: start the test services first " +
        '(eval "$(bash scripts/test-services.sh start | sed \'s/^/export /\')") or run npm test',
    );
  }
  return url;
}

/** Tests run on PostgreSQL instead of SQLite (DELTACI_TEST_STORE=postgres; scripts/test.sh sets it for a second pass). */
export function testStoreIsPostgres(): boolean {
  const v = process.env.DELTACI_TEST_STORE ?? "sqlite";
  if (v !== "sqlite" && v !== "postgres") throw new Error(`DELTACI_TEST_STORE must be sqlite or postgres, not ${v}`);
  return v === "postgres";
}

export interface TestDatabase {
  url: string;
  drop(): Promise<void>;
}

/** A fresh, empty database on the test cluster; `drop()` removes it (connections included). */
export async function createTestDatabase(): Promise<TestDatabase> {
  const base = new URL(testDatabaseUrl());
  const name = `deltaci_t_${randomBytes(6).toString("hex")}`;
  const admin = connectPg(base.toString(), { max: 1, applicationName: "deltaci-test-admin" });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end({ timeout: 1 });
  }
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const a = connectPg(base.toString(), { max: 1, applicationName: "deltaci-test-admin" });
      try {
        await a.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await a.end({ timeout: 1 });
      }
    },
  };
}
