// Copied into dist/ by scripts/build.mjs. Runs a bundle built as a CommonJS function expression
// (dist/deltaci.cjs) through vm.Script with a V8 code cache, so a start deserializes the bundle's
// compiled code instead of parsing and compiling ~5 MB of JavaScript (node 20 has no
// module.enableCompileCache; its ESM loader takes no cached data).
// The cache is a file in the user cache dir ($XDG_CACHE_HOME/deltaci, else ~/.cache/deltaci),
// named by the bundle's content hash (from the build) and path, node's flags, the subcommand, node's version and the architecture. It is
// written when missing or rejected by V8, at exit: by then it holds every function the command
// compiled, not only the top level. A missing, stale or unwritable cache only costs the compile.
// DELTACI_NO_CODE_CACHE=1 neither reads nor writes it.
// The entry may pass V8 flags: they are set before the cache is read, because V8 rejects a cache
// made under other flags (set later, every start would compile and rewrite the cache).
// Those flags also make V8 reject node's own code cache of its built-in modules (embedded in the
// binary, made under the default flags): each `require("node:http")` and the like after them
// compiled the module from source (~60 built-ins in a `deltaci run`). So the built-ins the command
// loaded last time (listed beside its cache, NAME.v8.builtins) are required before the flags are set.
// CommonJS, as are the entries that call it (dist/NAME-main.cjs, required by bin/deltaci.js): a
// start whose modules are all CommonJS never sets up node's ES module loader (~10-15 ms per start).
"use strict";
const { createHash } = require("node:crypto");
const { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } = require("node:fs");
const { builtinModules, createRequire } = require("node:module");
const { homedir } = require("node:os");
const { dirname, join } = require("node:path");
const { setFlagsFromString } = require("node:v8");
const { Script, constants } = require("node:vm");

/** Caches kept (subcommands, other checkouts and node versions share the dir); the oldest go first. */
const KEEP = 24;

function cacheDir() {
  const env = process.env;
  return join(env.XDG_CACHE_HOME ? env.XDG_CACHE_HOME : join(homedir(), ".cache"), "deltaci", "code-cache");
}

function readCache(file) {
  try {
    return readFileSync(file);
  } catch {
    return undefined;
  }
}

/** Writes `data` to `file` atomically: a concurrent start reads the old file or the new one. */
function writeAtomically(file, data) {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, data, { mode: 0o600 });
  renameSync(tmp, file);
}

/** Writes the cache (and the list of built-ins to preload, when given), then prunes old caches. */
function writeCache(dir, file, data, builtins) {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (builtins !== undefined) writeAtomically(`${file}.builtins`, builtins);
    writeAtomically(file, data);
    const others = readdirSync(dir)
      .filter((n) => n.endsWith(".v8") && join(dir, n) !== file)
      .map((n) => ({ path: join(dir, n), mtimeMs: statSync(join(dir, n), { throwIfNoEntry: false })?.mtimeMs ?? 0 }))
      .sort((a, b) => b.mtimeMs - a.mtimeMs);
    for (const old of others.slice(KEEP - 1)) {
      rmSync(old.path, { force: true });
      rmSync(`${old.path}.builtins`, { force: true });
    }
  } catch {
    // a read-only or full cache dir: the next start compiles again
  }
}

/** Writes only the list of built-ins (its cache is fine); a failure costs the next start its preload. */
function writeListOnly(file, list) {
  try {
    writeAtomically(file, list);
  } catch {
    // as for the cache: the next start goes without
  }
}

/** The public built-in modules this process loaded (node's own list of what it loaded, in order). */
function loadedBuiltins() {
  const known = new Set(builtinModules);
  const names = process.moduleLoadList.filter((e) => e.startsWith("NativeModule ")).map((e) => e.slice("NativeModule ".length));
  return names.filter((n) => known.has(n)).join("\n");
}

/** Requires the built-ins listed in `file` (one a line), while node's code cache for them is still valid; false: no list. */
function preloadBuiltins(file) {
  let list;
  try {
    list = readFileSync(file, "latin1");
  } catch {
    return false;
  }
  const known = new Set(builtinModules);
  for (const name of list.split("\n")) {
    if (!known.has(name)) continue;
    try {
      require(`node:${name}`);
    } catch {
      // a built-in that fails to load here must not fail every start: the list goes, the next exit rewrites it
      rmSync(file, { force: true });
      return false;
    }
  }
  return true;
}

/**
 * Runs the bundle at `filename` (an absolute path) as the main module would run; `hash`: its
 * content hash, from the build; `v8Flags`: V8 flags the bundle runs with (set first: the cache
 * depends on them).
 */
function runWithCodeCache(filename, hash, v8Flags = []) {
  const source = readFileSync(filename).toString("latin1"); // the build made it ASCII: no UTF-8 decoding (~20 ms for 6 MB)
  const enabled = process.env.DELTACI_NO_CODE_CACHE !== "1";
  const dir = cacheDir();
  // One cache per subcommand: each holds the functions its command ran (`run` and `--version` differ).
  const command = /^[a-z][a-z-]{0,30}$/.test(process.argv[2] ?? "") ? process.argv[2] : "_";
  // The bundle's path too: a cache keeps the script name it was made with (stack traces of a copied bundle).
  // And node's flags: V8 rejects a cache made under other flags (a runner host started by a
  // controller, RUNNER_HOST_NODE_FLAGS, and one started by hand would each throw the other's away).
  const where = createHash("sha256").update(filename).update(`\0${process.execArgv.join("\0")}`).digest("hex").slice(0, 8);
  const file = join(dir, `${hash}-${where}-${command}-${process.version}-${process.arch}.v8`);
  // Only with no node flags of its own: flags on node's command line (a runner host's
  // RUNNER_HOST_NODE_FLAGS) already made node reject its built-ins' cache, so a preload would only
  // load early what the host loads on first need (zlib, dns: figure 4's idle RSS).
  const preload = enabled && v8Flags.length > 0 && process.execArgv.length === 0;
  const listed = preload ? preloadBuiltins(`${file}.builtins`) : true;
  for (const flag of v8Flags) setFlagsFromString(flag);
  const cachedData = enabled ? readCache(file) : undefined;
  const script = new Script(source, { filename, cachedData, importModuleDynamically: constants.USE_MAIN_CONTEXT_DEFAULT_LOADER });
  const builtins = preload ? () => loadedBuiltins() : () => undefined;
  if (enabled && (cachedData === undefined || script.cachedDataRejected === true)) {
    process.once("exit", () => writeCache(dir, file, script.createCachedData(), builtins()));
  } else if (!listed) {
    process.once("exit", () => writeListOnly(`${file}.builtins`, loadedBuiltins())); // a cache made before the lists
  }
  const fn = script.runInThisContext();
  const module = { exports: {}, filename, id: ".", loaded: false };
  fn.call(module.exports, module.exports, createRequire(filename), module, filename, dirname(filename));
}

module.exports = { runWithCodeCache };
