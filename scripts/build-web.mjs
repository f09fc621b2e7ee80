// Bundles the web view (src/web, Preact) into dist/web/app.js and app.css: no CDN, shipped with
// the package; the server serves them under content-hashed names (src/server/web/assets.ts).
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

export async function buildWeb(root = fileURLToPath(new URL("..", import.meta.url))) {
  await build({
    entryPoints: [`${root}src/web/main.tsx`], outfile: `${root}dist/web/app.js`, bundle: true, format: "esm",
    target: ["es2022", "chrome110", "firefox110", "safari16"], platform: "browser", minify: true, legalComments: "none",
    jsx: "automatic", jsxImportSource: "preact", tsconfig: `${root}src/web/tsconfig.json`, logLevel: "warning",
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await buildWeb();
