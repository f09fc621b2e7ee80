// Bundles the CLI into dist/ so `deltaci` starts without transpiling TypeScript (tsx costs
// ~0.5 s per start; runners start per job). dist/runner.mjs holds only `deltaci runner`, so a
// runner loads no server or CLI libraries. The packages are bundled too (resolving and reading
// a few hundred package files cost ~0.2 s per start), except better-sqlite3 (a native addon).
// Bundled CommonJS packages get a `require` for what they load at run time (node: built-ins).
// bin/deltaci.js runs the sources instead when src/ or the installed packages are newer.
// dist/web/ holds the web view's assets (scripts/build-web.mjs), served by `deltaci server`.
import { build } from "esbuild";
import { buildWeb } from "./build-web.mjs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const banner = { js: 'import { createRequire as __deltaciRequire } from "node:module"; const require = __deltaciRequire(import.meta.url);' };
const common = {
  bundle: true, platform: "node", format: "esm", target: "node20", external: ["better-sqlite3"], banner,
  sourcemap: "linked", logLevel: "warning",
};
await Promise.all([
  build({ ...common, entryPoints: [`${root}src/cli/main.ts`], outfile: `${root}dist/deltaci.mjs` }),
  build({ ...common, entryPoints: [`${root}src/cli/runner-main.ts`], outfile: `${root}dist/runner.mjs` }),
  buildWeb(root),
]);
