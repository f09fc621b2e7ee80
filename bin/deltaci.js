#!/usr/bin/env node
// Entry point. Runs the prebuilt bundle (dist/, made by `npm run build`) when it is newer than
// every source file and the installed packages (it bundles them); otherwise the TypeScript
// sources through tsx, so a stale bundle never runs.
// `deltaci runner` and `deltaci runner-host` use the runner-only bundle (no server or CLI libraries to load).
import { existsSync, readdirSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const runnerOnly = process.argv[2] === "runner" || process.argv[2] === "runner-host";
const bundle = `${root}dist/${runnerOnly ? "runner" : "deltaci"}.mjs`;

function bundleIsFresh() {
  if (process.env.DELTACI_FROM_SOURCE === "1" || !existsSync(bundle)) return false;
  const builtAt = statSync(bundle).mtimeMs;
  // The bundle holds the packages too: an install after the build makes it stale.
  for (const lock of ["package-lock.json", "node_modules/.package-lock.json"]) {
    if (existsSync(`${root}${lock}`) && statSync(`${root}${lock}`).mtimeMs > builtAt) return false;
  }
  for (const entry of readdirSync(`${root}src`, { recursive: true, withFileTypes: true })) {
    if (entry.isFile() && statSync(`${entry.parentPath ?? entry.path}/${entry.name}`).mtimeMs > builtAt) return false;
  }
  return true;
}

if (bundleIsFresh()) {
  await import(bundle);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import(runnerOnly ? "../src/cli/runner-main.ts" : "../src/cli/main.ts");
}
