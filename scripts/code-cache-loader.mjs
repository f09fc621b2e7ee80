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
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { setFlagsFromString } from "node:v8";
import { Script, constants } from "node:vm";

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

/** Writes `data` atomically (a concurrent start reads the old file or the new one), then prunes old caches. */
function writeCache(dir, file, data) {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, data, { mode: 0o600 });
    renameSync(tmp, file);
    const others = readdirSync(dir)
      .filter((n) => n.endsWith(".v8") && join(dir, n) !== file)
      .map((n) => ({ path: join(dir, n), mtimeMs: statSync(join(dir, n), { throwIfNoEntry: false })?.mtimeMs ?? 0 }))
      .sort((a, b) => b.mtimeMs - a.mtimeMs);
    for (const old of others.slice(KEEP - 1)) rmSync(old.path, { force: true });
  } catch {
    // a read-only or full cache dir: the next start compiles again
  }
}

/**
 * Runs the bundle at `url` (a file URL) as the main module would run; `hash`: its content hash,
 * from the build; `v8Flags`: V8 flags the bundle runs with (set first: the cache depends on them).
 */
export function runWithCodeCache(url, hash, v8Flags = []) {
  for (const flag of v8Flags) setFlagsFromString(flag);
  const filename = fileURLToPath(url);
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
  const cachedData = enabled ? readCache(file) : undefined;
  const script = new Script(source, { filename, cachedData, importModuleDynamically: constants.USE_MAIN_CONTEXT_DEFAULT_LOADER });
  if (enabled && (cachedData === undefined || script.cachedDataRejected === true)) {
    process.once("exit", () => writeCache(dir, file, script.createCachedData()));
  }
  const fn = script.runInThisContext();
  const module = { exports: {}, filename, id: ".", loaded: false };
  fn.call(module.exports, module.exports, createRequire(filename), module, filename, dirname(filename));
}
