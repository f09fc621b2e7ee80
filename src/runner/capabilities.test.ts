import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { probeToolchains, SharedToolchains } from "./capabilities.ts";
import { userCacheDir } from "../config/paths.ts";

void test("the toolchain probe's cache: made with its dir, used while a binary's size and mtime match, redone when they do not", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "deltaci-toolchains-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "not-yet", "toolchains.json");
  const probed = await probeToolchains(file);
  assert.ok(probed.node, "node is found in the host's bin dirs");
  const cache = JSON.parse(readFileSync(file, "utf8")) as Record<string, { key: string; version: string }>;
  assert.equal(statSync(join(dir, "not-yet")).mode & 0o777, 0o700);
  const node = cache.node;
  assert.ok(node);
  // A planted version under the binary's current key is believed: the cache was used, node not run.
  writeFileSync(file, JSON.stringify({ ...cache, node: { key: node.key, version: "0.0.0-cached" } }));
  assert.equal((await probeToolchains(file)).node, "0.0.0-cached");
  // Under another key (the binary changed), node is run again.
  writeFileSync(file, JSON.stringify({ ...cache, node: { key: `${node.key}-changed`, version: "0.0.0-cached" } }));
  assert.equal((await probeToolchains(file)).node, probed.node);
  assert.equal((JSON.parse(readFileSync(file, "utf8")) as typeof cache).node?.key, node.key, "the file is brought up to date");
});

void test("probes of one cache file that overlap share one probe; a later call probes again", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "deltaci-toolchains-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "toolchains.json");
  const first = probeToolchains(file);
  assert.equal(probeToolchains(file), first, "a session starting meanwhile gets the probe in flight");
  const other = probeToolchains(join(dir, "other.json"));
  assert.notEqual(other, first, "another cache file has its own");
  const [probed] = await Promise.all([first, other]);
  assert.ok(probed.node);
  const later = probeToolchains(file);
  assert.notEqual(later, first, "once settled, the next call reads the cache again");
  assert.deepEqual(await later, probed);
});

void test("a host's shared probe: one per recheck interval, then the cache file is read again", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "deltaci-toolchains-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "toolchains.json");
  let now = 0;
  const shared = new SharedToolchains({ cacheFile: file, recheckMs: 1000, clock: { now: () => now, sleep: () => Promise.resolve() } });
  const first = await shared.get();
  assert.ok(first.node);
  const cache = JSON.parse(readFileSync(file, "utf8")) as Record<string, { key: string; version: string }>;
  writeFileSync(file, JSON.stringify({ ...cache, node: { ...cache.node, version: "0.0.0-planted" } }));
  now = 999;
  assert.equal((await shared.get()).node, first.node, "within the interval: the same probe, the file not read");
  now = 1000;
  assert.equal((await shared.get()).node, "0.0.0-planted", "after it: probed again (from the cache file)");
});

void test("a host's shared probe is not kept when a tool found did not answer (timed out, failed): the next session probes again", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "deltaci-toolchains-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bin = join(dir, "bin");
  mkdirSync(bin);
  const tool = (name: string, script: string) => writeFileSync(join(bin, name), `#!/bin/sh\n${script}\n`, { mode: 0o755 });
  tool("node", "echo v20.1.0");
  tool("git", "exit 1"); // as a probe cut by its timeout answers: nothing
  const shared = new SharedToolchains({ cacheFile: join(dir, "toolchains.json"), recheckMs: 60_000, clock: { now: () => 0, sleep: () => Promise.resolve() }, binDirs: [bin] });
  assert.deepEqual(await shared.get(), { node: "20.1.0" });
  tool("git", "echo git version 2.39.5");
  assert.deepEqual(await shared.get(), { node: "20.1.0", git: "2.39.5" }, "within the interval, yet probed again: git is offered");
  tool("git", "exit 1");
  assert.deepEqual(await shared.get(), { node: "20.1.0", git: "2.39.5" }, "a complete probe is kept for the interval");
});

void test("the user cache dir: $XDG_CACHE_HOME/deltaci, else ~/.cache/deltaci", () => {
  assert.equal(userCacheDir({ XDG_CACHE_HOME: "/x/cache" }), "/x/cache/deltaci");
  assert.match(userCacheDir({}), /\/\.cache\/deltaci$/);
});
