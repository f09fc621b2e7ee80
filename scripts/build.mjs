// Bundles the CLI into dist/ so `deltaci` starts without transpiling TypeScript (tsx costs
// ~0.5 s per start; runners start per job). dist/runner.mjs holds only `deltaci runner`, so a
// runner loads no server or CLI libraries. Packages stay external.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const common = { bundle: true, platform: "node", format: "esm", target: "node20", packages: "external", sourcemap: "linked", logLevel: "warning" };
await Promise.all([
  build({ ...common, entryPoints: [`${root}src/cli/main.ts`], outfile: `${root}dist/deltaci.mjs` }),
  build({ ...common, entryPoints: [`${root}src/cli/runner-main.ts`], outfile: `${root}dist/runner.mjs` }),
]);
