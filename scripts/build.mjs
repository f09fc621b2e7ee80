// Bundles the CLI into dist/deltaci.mjs so `deltaci` starts without transpiling TypeScript
// (tsx costs ~0.5 s per start; runners start per job). Packages stay external.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
await build({
  entryPoints: [`${root}src/cli/main.ts`],
  outfile: `${root}dist/deltaci.mjs`,
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  packages: "external",
  sourcemap: "linked",
  logLevel: "warning",
});
