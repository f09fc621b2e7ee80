/**
 * The vendor bundles (scripts/build.mjs: dist/vendor-s3.cjs, dist/vendor-pg.cjs) are required only
 * when their feature is configured: a `deltaci run` loads neither, while `deltaci server
 * --blob-store s3://…` loads (and works on) vendor-s3, and `--database postgres://…` vendor-pg.
 * Real processes of the built bundle (dist/deltaci-main.cjs, run as bench/cli-run.ts runs it), their
 * module loads seen through node's own NODE_DEBUG=module trace; the S3 and PostgreSQL services of
 * scripts/test-services.sh.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { statSync } from "node:fs";
import { join } from "node:path";
import { projectRoot } from "../src/config/paths.ts";
import { testS3Env } from "../src/config/server-config.ts";
import { exampleCopy, tempDir } from "./cli-helpers.ts";
import { createTestDatabase } from "./support/pg-test-db.ts";

const bundle = join(projectRoot(), "dist", "deltaci-main.cjs");
const vendorLoad = (name: string) => new RegExp(`MODULE \\d+: load "[^"]*/dist/${name}\\.cjs"`);

interface Run {
  code: number | null;
  output: string;
}

/**
 * `node dist/deltaci-main.cjs ARGS` with node's module trace on; ends when it exits, or is stopped
 * (SIGTERM, by pid) once its output matches `until`.
 */
function runBundle(args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; until?: RegExp }): Promise<Run> {
  assert.ok(statSync(bundle, { throwIfNoEntry: false }), `${bundle} is missing: run npm run build`);
  const child = spawn(process.execPath, [bundle, ...args], {
    cwd: opts.cwd, env: { ...process.env, NO_COLOR: "1", NODE_DEBUG: "module", ...opts.env }, stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  let stopped = false;
  const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
  const onData = (b: Buffer) => {
    output += b.toString();
    if (!stopped && opts.until?.test(output)) {
      stopped = true;
      child.kill("SIGTERM");
    }
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  return new Promise((resolve) => {
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

void test("deltaci run loads no vendor bundle", async (t) => {
  const dir = exampleCopy(t, "hello");
  const r = await runBundle(["run", "--isolation", "process"], { cwd: dir });
  assert.equal(r.code, 0, r.output);
  assert.match(r.output, /hello from Delta CI/);
  assert.match(r.output, /MODULE \d+: .*parent: \S*\/dist\/deltaci\.cjs/, "the trace shows the bundle's requires");
  assert.doesNotMatch(r.output, /vendor-(s3|pg)\.cjs/);
});

void test("deltaci server --blob-store s3:// loads vendor-s3 and serves", async (t) => {
  const s3 = testS3Env();
  const dir = tempDir(t);
  const r = await runBundle([
    "server", "--listen", "127.0.0.1:0", "--data-dir", join(dir, "data"), "--blob-store", `s3://${s3.bucket}/vendor-${randomBytes(6).toString("hex")}`,
    "--s3-endpoint", s3.endpoint, "--s3-region", s3.region, "--s3-path-style",
  ], { cwd: dir, until: /server ready at http/ });
  assert.match(r.output, /server ready at http/, r.output);
  assert.match(r.output, vendorLoad("vendor-s3"));
  assert.doesNotMatch(r.output, /vendor-pg\.cjs/);
});

void test("deltaci server --database postgres:// loads vendor-pg and serves", async (t) => {
  const db = await createTestDatabase();
  t.after(() => db.drop());
  const dir = tempDir(t);
  const r = await runBundle(["server", "--listen", "127.0.0.1:0", "--data-dir", join(dir, "data"), "--database", db.url], {
    cwd: dir, until: /blob store: .*\n/, // after the state line: stopped earlier, the server may leave that line unwritten
    env: { DELTACI_API_TOKEN: `api-${randomBytes(16).toString("hex")}`, DELTACI_CONTROLLER_TOKEN: `ctl-${randomBytes(16).toString("hex")}` },
  });
  assert.match(r.output, /server ready at http/, r.output);
  assert.match(r.output, /state: +PostgreSQL/);
  assert.match(r.output, vendorLoad("vendor-pg"));
  assert.doesNotMatch(r.output, /vendor-s3\.cjs/);
});
