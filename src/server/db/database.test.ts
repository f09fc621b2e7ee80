import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SqliteDatabase } from "./database.ts";
import { migrations } from "./migrations.ts";

function withDb(fn: (db: SqliteDatabase) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "deltaci-db-test-"));
  const db = new SqliteDatabase(join(dir, "state.db"), "full");
  return fn(db).finally(async () => {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  });
}

void test("migrations are applied once, in order", () =>
  withDb(async (db) => {
    assert.equal(db.schemaVersion(), migrations.at(-1)?.version);
  }));

void test("ops of one turn share one commit; a failing op is rolled back alone", () =>
  withDb(async (db) => {
    const put = (k: string) => db.write(() => db.db.prepare("INSERT INTO kv(key, value) VALUES (?, 'v')").run(k));
    const undone: string[] = [];
    const results = await Promise.allSettled([
      put("a"),
      db.write((hooks) => {
        db.db.prepare("INSERT INTO kv(key, value) VALUES ('b', 'v')").run();
        hooks.onRollback(() => undone.push("b"));
        throw new Error("no");
      }),
      put("c"),
    ]);
    assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "fulfilled"]);
    assert.deepEqual(undone, ["b"]);
    assert.deepEqual(db.db.prepare("SELECT key FROM kv ORDER BY key").pluck().all(), ["a", "c"]);
    assert.equal(db.stats.commits, 1);
    assert.equal(db.stats.ops, 3);
  }));

void test("an op that fails before writing costs the others nothing; one that wrote has them run again without it", () =>
  withDb(async (db) => {
    const runs: string[] = [];
    const put = (k: string) => db.write(() => {
      runs.push(k);
      db.db.prepare("INSERT INTO kv(key, value) VALUES (?, 'v')").run(k);
    });
    const check = () => db.write(() => {
      runs.push("check");
      throw new Error("refused before writing");
    });
    await Promise.allSettled([put("a"), check(), put("b")]);
    assert.deepEqual(runs, ["a", "check", "b"]);
    runs.length = 0;
    const spoiler = () => db.write(() => {
      runs.push("spoiler");
      db.db.prepare("UPDATE kv SET value = 'x' WHERE key = 'a'").run();
      throw new Error("failed after writing");
    });
    const results = await Promise.allSettled([put("c"), spoiler(), put("d")]);
    assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "fulfilled"]);
    assert.deepEqual(runs, ["c", "spoiler", "c", "d"]);
    assert.deepEqual(db.db.prepare("SELECT key || value FROM kv ORDER BY key").pluck().all(), ["av", "bv", "cv", "dv"]);
    assert.equal(db.stats.commits, 2);
  }));

void test("after-commit hooks run after the commit, before the op resolves", () =>
  withDb(async (db) => {
    const seen: string[] = [];
    await db.write((hooks) => {
      db.db.prepare("INSERT INTO kv(key, value) VALUES ('k', 'v')").run();
      hooks.afterCommit(() => seen.push(db.db.inTransaction ? "in tx" : "committed"));
    });
    assert.deepEqual(seen, ["committed"]);
  }));

void test("a lone failing op leaves nothing behind and the next write works", () =>
  withDb(async (db) => {
    await assert.rejects(db.write(() => {
      db.db.prepare("INSERT INTO kv(key, value) VALUES ('x', 'v')").run();
      throw new Error("no");
    }));
    assert.equal(db.db.inTransaction, false);
    await db.write(() => db.db.prepare("INSERT INTO kv(key, value) VALUES ('y', 'v')").run());
    assert.deepEqual(db.db.prepare("SELECT key FROM kv").pluck().all(), ["y"]);
  }));

void test("durability: the connection's synchronous level, kept through batches (full syncs after the commit; none never syncs)", async () => {
  for (const [durability, level] of [["full", 1], ["normal", 1], ["none", 0]] as const) {
    const dir = mkdtempSync(join(tmpdir(), "deltaci-db-test-"));
    const db = new SqliteDatabase(join(dir, "state.db"), durability);
    try {
      assert.equal(db.db.pragma("journal_mode", { simple: true }), "wal");
      await db.write(() => db.db.prepare("INSERT INTO kv(key, value) VALUES ('a', 'v')").run(), { durable: false });
      assert.equal(db.db.pragma("synchronous", { simple: true }), level);
      await db.write(() => db.db.prepare("INSERT INTO kv(key, value) VALUES ('b', 'v')").run());
      assert.equal(db.db.pragma("synchronous", { simple: true }), level);
      assert.equal(db.durable(), null);
    } finally {
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

void test("full durability: a write is acknowledged, and its hooks run, only after the WAL sync that follows its commit; reads wait for it", () =>
  withDb(async (db) => {
    const seen: string[] = [];
    const w = db.write((hooks) => {
      db.db.prepare("INSERT INTO kv(key, value) VALUES ('k', 'v')").run();
      hooks.afterCommit(() => seen.push("hook"));
      return "done";
    });
    void w.then(() => seen.push("acknowledged"));
    // Runs the batch now: committed, its sync on the thread pool (its callback needs another turn of the loop).
    await db.flush();
    assert.equal(db.db.prepare("SELECT value FROM kv WHERE key = 'k'").pluck().get(), "v");
    const read = db.durable();
    assert.ok(read, "a commit is waiting for its sync");
    // A heartbeat-like batch asks for no sync of its own but is not acknowledged before the one due.
    const light = db.write(() => "light", { durable: false });
    await db.flush();
    assert.deepEqual(seen, []);
    await read;
    assert.equal(await w, "done");
    assert.equal(await light, "light");
    assert.deepEqual(seen, ["hook", "acknowledged"]);
    assert.equal(db.durable(), null);
  }));

void test("full durability: a database closed (its WAL removed) opens again with what it held", async () => {
  const dir = mkdtempSync(join(tmpdir(), "deltaci-db-test-"));
  try {
    const file = join(dir, "state.db");
    const first = new SqliteDatabase(file, "full");
    await first.write(() => first.db.prepare("INSERT INTO kv(key, value) VALUES ('a', 'v')").run());
    await first.close();
    const again = new SqliteDatabase(file, "full");
    try {
      assert.equal(again.db.prepare("SELECT value FROM kv WHERE key = 'a'").pluck().get(), "v");
      await again.write(() => again.db.prepare("INSERT INTO kv(key, value) VALUES ('b', 'v')").run());
    } finally {
      await again.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
