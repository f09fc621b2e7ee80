// Bundles the CLI into dist/ so `deltaci` starts without transpiling TypeScript (tsx costs
// ~0.5 s per start; runners start per job). dist/runner.mjs holds only `deltaci runner`, so a
// runner loads no server or CLI libraries. The packages are bundled too (resolving and reading
// a few hundred package files cost ~0.2 s per start), except better-sqlite3 (a native addon).
// Bundled CommonJS packages get a `require` for what they load at run time (node: built-ins).
// What dist/deltaci.mjs imports dynamically (the S3 blob store and its SDK) is split off into
// dist/chunks/, loaded only when used: ~1 MB less to compile at every start.
// bin/deltaci.js runs the sources instead when src/ or the installed packages are newer.
// dist/web/ holds the web view's assets (scripts/build-web.mjs), served by `deltaci server`.
// The bundles carry ajv validators generated from the schemas (scripts/precompile-validators.ts):
// no schema is compiled at start.
import { build } from "esbuild";
import { buildWeb } from "./build-web.mjs";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
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
const banner = { js: 'import { createRequire as __deltaciRequire } from "node:module"; const require = __deltaciRequire(import.meta.url);' };
const common = {
  bundle: true, platform: "node", format: "esm", target: "node20", external: ["better-sqlite3"], banner,
  sourcemap: "linked", logLevel: "warning", plugins: [precompiledValidators],
};
await rm(`${root}dist/chunks`, { recursive: true, force: true }); // no stale chunks
await Promise.all([
  build({
    ...common, entryPoints: { deltaci: `${root}src/cli/main.ts` }, outdir: `${root}dist`, splitting: true,
    chunkNames: "chunks/[name]-[hash]", outExtension: { ".js": ".mjs" },
  }),
  build({ ...common, entryPoints: [`${root}src/cli/runner-main.ts`], outfile: `${root}dist/runner.mjs` }),
  buildWeb(root),
]);
