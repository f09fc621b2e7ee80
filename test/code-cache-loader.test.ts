/**
 * scripts/code-cache-loader.cjs (copied into dist/ by the build): a bundle run through it behaves
 * as the main module would (CommonJS wrapper arguments, strict mode, exit code), its V8 code cache
 * is written once and then used, and a corrupt or disabled cache changes nothing but speed.
 * Real node child processes, a real cache dir (XDG_CACHE_HOME in a temp dir).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { projectRoot } from "../src/config/paths.ts";

const loader = join(projectRoot(), "scripts", "code-cache-loader.cjs");

/** A bundle as the build makes it: a function expression taking the CommonJS module arguments. */
const bundle = `(function (exports, require, module, __filename, __dirname) { "use strict";
const { basename } = require("node:path");
const strict = (function () { return this === undefined; })();
process.stdout.write(JSON.stringify({ file: basename(__filename), dir: __dirname, strict, command: process.argv[2] ?? null, exportsIsModuleExports: exports === module.exports }));
process.exitCode = 3;
})`;

/** `v8Flags`: what the entry passes to the loader, as the build's entries do. */
function setUp(v8Flags?: string[]) {
  const dir = mkdtempSync(join(tmpdir(), "deltaci-code-cache-"));
  writeFileSync(join(dir, "b.cjs"), bundle);
  const flags = v8Flags ? `, ${JSON.stringify(v8Flags)}` : "";
  writeFileSync(join(dir, "b-main.cjs"), `require(${JSON.stringify(loader)}).runWithCodeCache(require("node:path").join(__dirname, "b.cjs"), "h0123456789abcdef"${flags});\n`);
  const cacheDir = join(dir, "cache", "deltaci", "code-cache");
  const run = (args: string[], env: NodeJS.ProcessEnv = {}, nodeFlags: string[] = []) => {
    const r = spawnSync(process.execPath, [...nodeFlags, join(dir, "b-main.cjs"), ...args], { encoding: "utf8", env: { ...process.env, XDG_CACHE_HOME: join(dir, "cache"), DELTACI_NO_CODE_CACHE: "", ...env } });
    return { status: r.status, out: JSON.parse(r.stdout) as Record<string, unknown>, stderr: r.stderr };
  };
  const caches = () => (statSync(cacheDir, { throwIfNoEntry: false }) ? readdirSync(cacheDir) : []);
  return { dir, cacheDir, run, caches, dispose: () => rmSync(dir, { recursive: true, force: true }) };
}

void test("the bundle runs as a CommonJS main module would, strict, with its exit code", () => {
  const t = setUp();
  try {
    const r = t.run(["run"]);
    assert.equal(r.status, 3, r.stderr);
    assert.deepEqual(r.out, { file: "b.cjs", dir: t.dir, strict: true, command: "run", exportsIsModuleExports: true });
  } finally {
    t.dispose();
  }
});

void test("the cache is written at the first run, per subcommand, and then used as is", () => {
  const t = setUp();
  try {
    assert.deepEqual(t.caches(), []);
    t.run(["run"]);
    const [first, ...others] = t.caches();
    assert.ok(first !== undefined && others.length === 0, `one cache file, got ${t.caches().join(", ")}`);
    assert.match(first, new RegExp(`^h0123456789abcdef-[0-9a-f]{8}-run-${process.version.replace(/\./g, "\\.")}-${process.arch}\\.v8$`));
    const before = statSync(join(t.cacheDir, first));
    const again = t.run(["run"]);
    assert.equal(again.status, 3);
    const after = statSync(join(t.cacheDir, first));
    assert.equal(after.ino, before.ino, "an accepted cache is not written again (it is renamed into place when written)");
    t.run(["--version"]); // not a subcommand name: a cache of its own
    assert.equal(t.caches().length, 2);
  } finally {
    t.dispose();
  }
});

void test("node's flags get a cache of their own (V8 rejects a cache made under other flags), each then used as is", () => {
  const t = setUp();
  try {
    const flags = ["--max-semi-space-size=1", "--no-opt"];
    t.run(["runner-host"]);
    assert.equal(t.run(["runner-host"], {}, flags).status, 3);
    const files = t.caches().sort();
    assert.equal(files.length, 2, `a cache per set of flags, got ${files.join(", ")}`);
    const inodes = () => t.caches().sort().map((n) => statSync(join(t.cacheDir, n)).ino);
    const before = inodes();
    t.run(["runner-host"], {}, flags);
    t.run(["runner-host"]);
    assert.deepEqual(inodes(), before, "neither run threw the other's cache away");
  } finally {
    t.dispose();
  }
});

void test("V8 flags from the entry are set before the cache is read: the cache made under them is used as is", () => {
  const t = setUp(["--liftoff-only"]);
  try {
    const r = t.run(["run"]);
    assert.equal(r.status, 3, r.stderr);
    const [name] = t.caches();
    assert.ok(name);
    const before = statSync(join(t.cacheDir, name));
    assert.equal(t.run(["run"]).status, 3);
    assert.equal(statSync(join(t.cacheDir, name)).ino, before.ino, "a cache made under the same flags is not rejected and rewritten");
  } finally {
    t.dispose();
  }
});

void test("with V8 flags, the built-ins the command loaded are listed beside its cache, preloaded, and listed again when the list is gone", () => {
  const t = setUp(["--liftoff-only"]);
  try {
    t.run(["run"]);
    const name = t.caches().find((n) => n.endsWith(".v8"));
    assert.ok(name);
    const list = join(t.cacheDir, `${name}.builtins`);
    assert.ok(readFileSync(list, "latin1").split("\n").includes("path"), "node:path, which the bundle requires, is listed");
    const cache = statSync(join(t.cacheDir, name)).ino;
    assert.equal(t.run(["run"]).status, 3, "runs with its built-ins preloaded");
    rmSync(list);
    assert.equal(t.run(["run"]).status, 3);
    assert.ok(readFileSync(list, "latin1").split("\n").includes("path"), "a cache without a list gets one");
    assert.equal(statSync(join(t.cacheDir, name)).ino, cache, "the cache itself is kept");
  } finally {
    t.dispose();
  }
});

void test("a corrupt cache is rejected, the bundle still runs, and the cache is rewritten", () => {
  const t = setUp();
  try {
    t.run(["run"]);
    const [name] = t.caches();
    assert.ok(name);
    const file = join(t.cacheDir, name);
    writeFileSync(file, Buffer.alloc(4096, 7));
    const r = t.run(["run"]);
    assert.equal(r.status, 3, r.stderr);
    assert.equal(r.out.command, "run");
    assert.notDeepEqual(readFileSync(file), Buffer.alloc(4096, 7));
  } finally {
    t.dispose();
  }
});

void test("DELTACI_NO_CODE_CACHE=1 neither reads nor writes a cache", () => {
  const t = setUp();
  try {
    const r = t.run(["run"], { DELTACI_NO_CODE_CACHE: "1" });
    assert.equal(r.status, 3, r.stderr);
    assert.deepEqual(t.caches(), []);
  } finally {
    t.dispose();
  }
});

void test("a script run from its code cache has no dynamic import, and the built bundles hold none", () => {
  // Why the build leaves none (scripts/build.mjs, `supported`): node 20 drops the callback.
  const t = setUp();
  try {
    writeFileSync(join(t.dir, "b.cjs"), `(function (exports, require) {
import("node:path").then(() => process.stdout.write('{"imported":true}'), (err) => process.stdout.write(JSON.stringify({ code: err.code })));
})`);
    assert.deepEqual(t.run([]).out, { imported: true }); // compiled: the callback is there
    assert.deepEqual(t.run([]).out, { code: "ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING" }); // from the cache: gone
  } finally {
    t.dispose();
  }
  for (const name of ["deltaci", "runner"]) {
    const file = join(projectRoot(), "dist", `${name}.cjs`);
    assert.ok(statSync(file, { throwIfNoEntry: false }), `${file} is missing: run npm run build (scripts/setup.sh does)`);
    // Code lines only: JSDoc types such as {import('net').Socket} are comments.
    const code = readFileSync(file, "latin1").split("\n").filter((l) => !/^\s*(\*|\/\/)/.test(l));
    const calls = code.filter((l) => /(?<![\w$.])import\s*\(/.test(l));
    assert.deepEqual(calls, [], `dynamic import() left in dist/${name}.cjs`);
  }
});
