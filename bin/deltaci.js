#!/usr/bin/env node
// Entry point. Runs the prebuilt bundle (dist/, made by `npm run build`) when it is newer than
// every source file and the installed packages (it bundles them); otherwise the TypeScript
// sources through tsx, so a stale bundle never runs.
// `deltaci runner` and `deltaci runner-host` use the runner-only bundle (no server or CLI libraries to load).
// CommonJS (bin/package.json), as is the bundle's entry: a start that loads no ES module never
// sets up node's ES module loader (~10-15 ms of every command, runner processes included).
"use strict";
const { existsSync, readdirSync, statSync } = require("node:fs");
const { join } = require("node:path");

const root = join(__dirname, "..");
const runnerOnly = process.argv[2] === "runner" || process.argv[2] === "runner-host";
const name = runnerOnly ? "runner" : "deltaci";
const entry = join(root, "dist", `${name}-main.cjs`);
/** Written last by the build: its time is the build's. */
const builtMarker = join(root, "dist", `${name}.mjs`);

function bundleIsFresh() {
  // (a build from before the CommonJS entries has the marker but no entry)
  if (process.env.DELTACI_FROM_SOURCE === "1" || !existsSync(builtMarker) || !existsSync(entry)) return false;
  const builtAt = statSync(builtMarker).mtimeMs;
  // The bundle holds the packages too: an install after the build makes it stale.
  for (const lock of ["package-lock.json", "node_modules/.package-lock.json"]) {
    if (existsSync(join(root, lock)) && statSync(join(root, lock)).mtimeMs > builtAt) return false;
  }
  for (const entry of readdirSync(join(root, "src"), { recursive: true, withFileTypes: true })) {
    if (entry.isFile() && statSync(`${entry.parentPath ?? entry.path}/${entry.name}`).mtimeMs > builtAt) return false;
  }
  return true;
}

if (bundleIsFresh()) {
  require(entry);
} else {
  // a rejection is unhandled, as the ES module's top-level await left it: node prints it and exits 1
  void import("tsx/esm/api").then(({ register }) => {
    register();
    return import(runnerOnly ? "../src/cli/runner-main.ts" : "../src/cli/main.ts");
  });
}
