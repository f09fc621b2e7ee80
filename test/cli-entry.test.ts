/**
 * The command's entry chain is CommonJS (bin/deltaci.js, with bin/package.json; dist/NAME-main.cjs;
 * dist/code-cache-loader.cjs): a start of the built bundle never sets up node's ES module loader,
 * whose first use costs ~10–15 ms. Real processes of the built bundle, node's own NODE_DEBUG=esm
 * trace (one line per step of that loader); dist/deltaci.mjs, the ES module entry of earlier
 * builds, still runs the same bundle.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { statSync } from "node:fs";
import { join } from "node:path";
import { projectRoot } from "../src/config/paths.ts";

const root = projectRoot();

function start(script: string, args: string[]) {
  const r = spawnSync(process.execPath, [script, ...args], { encoding: "utf8", env: { ...process.env, NODE_DEBUG: "esm", DELTACI_FROM_SOURCE: "" } });
  return { status: r.status, stdout: r.stdout, esmLines: r.stderr.split("\n").filter((l) => /^ESM \d+:/.test(l)) };
}

function assertFreshBuild(): void {
  const builtAt = statSync(join(root, "dist", "deltaci.mjs"), { throwIfNoEntry: false })?.mtimeMs;
  assert.ok(builtAt !== undefined, "dist/ is missing: run npm run build");
  const stale = statSync(join(root, "bin", "deltaci.js")).mtimeMs > builtAt;
  assert.ok(!stale, "bin/deltaci.js is newer than dist/: run npm run build");
}

void test("bin/deltaci.js starts the bundle, and a runner's, without node's ES module loader", () => {
  assertFreshBuild();
  const version = start(join(root, "bin", "deltaci.js"), ["--version"]);
  assert.equal(version.status, 0);
  assert.equal(version.stdout.trim(), "0.1.0");
  assert.deepEqual(version.esmLines, [], "no ES module loaded (else bin/deltaci.js ran the sources through tsx: a stale build?)");
  const runner = start(join(root, "bin", "deltaci.js"), ["runner", "--help"]);
  assert.equal(runner.status, 0);
  assert.match(runner.stdout, /Usage: deltaci runner/);
  assert.deepEqual(runner.esmLines, []);
});

void test("dist/deltaci.mjs, the earlier ES module entry, runs the same bundle (through the ES module loader)", () => {
  assertFreshBuild();
  const r = start(join(root, "dist", "deltaci.mjs"), ["--version"]);
  assert.equal(r.status, 0);
  assert.equal(r.stdout.trim(), "0.1.0");
  assert.ok(r.esmLines.length > 0, "the trace shows the ES module loader when it runs");
});
