// Bundles the CLI into dist/ so `deltaci` starts without transpiling TypeScript (tsx costs
// ~0.5 s per start; runners start per job). dist/runner.cjs holds only `deltaci runner`, so a
// runner loads no server or CLI libraries. The packages are bundled too (resolving and reading
// a few hundred package files cost ~0.2 s per start); better-sqlite3's JavaScript too (its addon,
// build/Release/better_sqlite3.node, is required by path: src/server/db/database.ts).
// Bundled CommonJS packages get a `require` for what they load at run time (node: built-ins).
// dist/deltaci-main.cjs runs dist/deltaci.cjs with a V8 code cache in the user cache dir
// (dist/code-cache-loader.cjs, from scripts/): a start deserializes compiled code instead of
// compiling the ~3 MB bundle (~0.1 s less for `deltaci run`). dist/runner-main.cjs likewise.
// Neither loads node:http2 (noHttp2, lazyServerBuiltins). All CommonJS: no ES module loader at start.
// bin/deltaci.js runs the sources instead when src/ or the installed packages are newer.
// dist/web/ holds the web view's assets (scripts/build-web.mjs), served by `deltaci server`.
// The bundles carry ajv validators generated from the schemas (scripts/precompile-validators.ts):
// no schema is compiled at start.
import { build } from "esbuild";
import { buildWeb } from "./build-web.mjs";
import { createHash } from "node:crypto";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

/** The generated validators' source: the generator bundled (it imports the TypeScript schemas) and run. */
async function precompiledValidatorsSource() {
  await mkdir(`${root}dist`, { recursive: true });
  const tmp = await mkdtemp(`${root}dist/.build-`); // inside the checkout: the generator's packages resolve from node_modules/
  try {
    const out = join(tmp, "precompile-validators.mjs");
    await build({ entryPoints: [`${root}scripts/precompile-validators.ts`], outfile: out, bundle: true, platform: "node", format: "esm", packages: "external", logLevel: "warning" });
    return (await import(pathToFileURL(out).href)).precompiledValidatorsSource();
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

const precompiledModule = `${root}src/base/precompiled-validators.ts`;
const emptyMap = "export const precompiledValidators: ReadonlyMap<string, PrecompiledValidator> = new Map();";
const generated = await precompiledValidatorsSource();
/** Puts the generated validators in place of the sources' empty map. */
const precompiledValidators = {
  name: "precompiled-validators",
  setup(b) {
    b.onLoad({ filter: /precompiled-validators\.ts$/ }, async (args) => {
      if (args.path !== precompiledModule) return undefined;
      const source = await readFile(args.path, "utf8");
      if (!source.includes(emptyMap)) throw new Error(`${args.path}: no "${emptyMap}" to replace`);
      return { contents: source.replace(emptyMap, () => generated), loader: "ts", resolveDir: `${root}src/base` };
    });
  },
};
/** `undici` and `prom-client` are scripts/*-slim.cjs in the bundles: only what the sources use (why: there). */
const slimPackages = {
  name: "slim-packages",
  setup(b) {
    b.onResolve({ filter: /^undici$/ }, () => ({ path: `${root}scripts/undici-slim.cjs` }));
    b.onResolve({ filter: /^prom-client$/ }, () => ({ path: `${root}scripts/prom-client-slim.cjs` }));
  },
};
/**
 * No bundle has undici's `node:http2`: its HTTP/2 client requires it at load (and with it tls and
 * http), ~1.5 MiB of every runner host's RSS, and our client never speaks h2.
 * undici takes a failed require as "no http2" (lib/dispatcher/client-h2.js).
 */
const noHttp2 = {
  name: "no-http2",
  setup(b) {
    b.onResolve({ filter: /^node:http2$/ }, () => ({ path: "node:http2", namespace: "no-http2" }));
    b.onLoad({ filter: /.*/, namespace: "no-http2" }, () => ({ contents: 'throw new Error("node:http2 is left out of the bundle (scripts/build.mjs)");', loader: "js" }));
  },
};
/**
 * Third-party packages that only a configured feature loads (`--blob-store s3://`, `--database
 * postgres://`) live in their own bundles, dist/vendor-NAME.cjs, required when that feature is
 * opened: every other start reads, and keeps in memory, ~1.6 MB less of dist/deltaci.cjs. A
 * vendor bundle holds only node_modules code (checked below), so no class of ours exists twice
 * and `instanceof` holds; in the main bundle each package is a one-line module requiring it.
 */
const vendorBundles = {
  "vendor-s3": ["@aws-sdk/client-s3", "@aws-sdk/lib-storage", "@aws-sdk/s3-request-presigner"],
  "vendor-pg": ["postgres"],
};
const vendorSplit = {
  name: "vendor-split",
  setup(b) {
    for (const [bundleName, packages] of Object.entries(vendorBundles)) {
      for (const pkg of packages) {
        b.onResolve({ filter: new RegExp(`^${pkg.replace(/[/.]/g, "\\$&")}$`) }, () => ({ path: pkg, namespace: bundleName }));
      }
      b.onLoad({ filter: /.*/, namespace: bundleName }, (args) => ({ contents: `module.exports = require("./${bundleName}.cjs")[${JSON.stringify(args.path)}];`, loader: "js" }));
      b.onResolve({ filter: new RegExp(`^\\./${bundleName}\\.cjs$`), namespace: bundleName }, (args) => ({ path: args.path, external: true }));
    }
  },
};
/** dist/NAME.cjs for each vendor bundle: its packages' exports by package name. */
async function buildVendor(name, packages) {
  const result = await build({
    stdin: { contents: `module.exports = {\n${packages.map((p) => `  ${JSON.stringify(p)}: require(${JSON.stringify(p)}),`).join("\n")}\n};\n`, resolveDir: root, sourcefile: `${name}-entry.cjs`, loader: "js" },
    bundle: true, platform: "node", format: "cjs", target: "node20", outfile: `${root}dist/${name}.cjs`, sourcemap: "linked", logLevel: "warning", metafile: true,
  });
  const ours = Object.keys(result.metafile.inputs).filter((f) => !f.includes("node_modules/") && f !== `${name}-entry.cjs`);
  if (ours.length > 0) throw new Error(`dist/${name}.cjs must hold third-party code only, not ${ours.join(", ")}`);
}

/**
 * Fastify's lib/server.js requires node:https and node:http2 at load for servers made with those
 * options, which ours never are: there they are proxies that require the module on first use.
 * With undici's HTTP/2 client left out as well (noHttp2), a `deltaci run` loads neither module
 * nor node:tls under them (~10 ms of its start on a 2-core machine).
 */
const lazyServerBuiltins = {
  name: "lazy-server-builtins",
  setup(b) {
    b.onResolve({ filter: /^node:(https|http2)$/ }, (args) => {
      if (args.namespace === "lazy-builtin") return { path: args.path, external: true }; // the proxy's own require
      return /[/\\]fastify[/\\]lib[/\\]server\.js$/.test(args.importer) ? { path: args.path, namespace: "lazy-builtin" } : undefined;
    });
    b.onLoad({ filter: /.*/, namespace: "lazy-builtin" }, (args) => ({
      contents: `module.exports = new Proxy({}, { get: (_, key) => require(${JSON.stringify(args.path)})[key] });`, loader: "js", resolveDir: root,
    }));
  },
};
const banner = { js: 'import { createRequire as __deltaciRequire } from "node:module"; const require = __deltaciRequire(import.meta.url);' };
const common = {
  bundle: true, platform: "node", format: "esm", target: "node20", banner,
  sourcemap: "linked", logLevel: "warning", plugins: [precompiledValidators, slimPackages, vendorSplit],
};
/**
 * V8 flags of every start of a bundle, set by the loader before it reads the code cache.
 * `--liftoff-only`: the bundles' only WebAssembly is undici's HTTP parser (llhttp), and V8 tiers
 * its hot parse function up with TurboFan on a compile thread: ~0.2–0.3 s of CPU per process
 * (a `deltaci run` used 1.1 s of CPU with it, 0.8 s without, on this 2-core machine) and ~35 MiB
 * of RSS, and at exit node waits for the compile to finish. Liftoff code parses a command's few
 * responses for far less; runner hosts already ran with it (RUNNER_HOST_NODE_FLAGS, src/config/paths.ts).
 */
const bundleV8Flags = ["--liftoff-only"];
/**
 * `entry` as dist/NAME.cjs, a CommonJS function expression that dist/code-cache-loader.cjs runs
 * with a V8 code cache; dist/NAME-main.cjs, the loader's call (what bin/deltaci.js requires); and
 * dist/NAME.mjs, which imports it, for callers of the ES module entry of earlier builds (it costs
 * node's ES module loader, ~10-15 ms). Strict mode as in the ESM bundle; `import.meta.url` is the
 * .cjs file's URL.
 */
async function buildCached(name, entry, plugins = []) {
  const out = `${root}dist/${name}.cjs`;
  await build({
    ...common, format: "cjs", entryPoints: [entry], outfile: out, plugins: [...common.plugins, ...plugins],
    // Every start reads the whole file into a string (page faults on ~2 fresh copies of it): without
    // indentation and line breaks it is half the size. Names are kept; the source map maps positions.
    minifyWhitespace: true,
    define: { "import.meta.url": "__deltaciBundleUrl" },
    // A script compiled from a V8 code cache has no dynamic-import callback (node 20 drops it:
    // ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING from the second start on), so no `import()` may be
    // left in the bundle: esbuild turns those of external modules (the AWS SDK's
    // `await import("node:http")` for instance-role credentials) into `require`.
    supported: { "dynamic-import": false },
    banner: { js: '(function (exports, require, module, __filename, __dirname) { "use strict"; const __deltaciBundleUrl = require("node:url").pathToFileURL(__filename).href;' },
    footer: { js: "})" },
  });
  // ASCII only, so the loader reads it as latin1: ~20 ms less than decoding 6 MB of UTF-8. esbuild
  // escapes non-ASCII characters in code already; what is left is in comments. A \u escape means
  // the same character in a string, regex, template or identifier as well.
  const text = (await readFile(out, "utf8")).replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  await writeFile(out, text);
  const hash = createHash("sha256").update(text).digest("hex").slice(0, 32);
  // Written by the caller once every part of the build succeeded: bin/deltaci.js takes this
  // file's time as the build's, so it must not exist beside a vendor bundle that failed.
  return async () => {
    await writeFile(`${root}dist/${name}-main.cjs`, `// Generated by scripts/build.mjs: runs ${name}.cjs with a V8 code cache.\n"use strict";\n` +
      `require("./code-cache-loader.cjs").runWithCodeCache(require("node:path").join(__dirname, "${name}.cjs"), ${JSON.stringify(hash)}, ${JSON.stringify(bundleV8Flags)});\n`);
    // last: bin/deltaci.js takes this file's time as the build's
    await writeFile(`${root}dist/${name}.mjs`, `// Generated by scripts/build.mjs: the ES module entry of earlier builds; ${name}-main.cjs starts faster.\nimport "./${name}-main.cjs";\n`);
  };
}

// no stale output of older builds (the split ESM bundle)
// (and no entry point of an earlier build left to look fresh if this one fails part way)
for (const old of ["chunks", "deltaci.mjs.map", "runner.mjs.map", "deltaci.mjs", "runner.mjs", "deltaci-main.cjs", "runner-main.cjs", "code-cache-loader.mjs"]) {
  await rm(`${root}dist/${old}`, { recursive: true, force: true });
}
await mkdir(`${root}dist`, { recursive: true });
await copyFile(`${root}scripts/code-cache-loader.cjs`, `${root}dist/code-cache-loader.cjs`);
const [writeMain, writeRunner] = await Promise.all([
  buildCached("deltaci", `${root}src/cli/main.ts`, [lazyServerBuiltins, noHttp2]),
  buildCached("runner", `${root}src/cli/runner-main.ts`, [noHttp2]),
  buildWeb(root),
  ...Object.entries(vendorBundles).map(([name, packages]) => buildVendor(name, packages)),
]);
await Promise.all([writeMain(), writeRunner()]);
