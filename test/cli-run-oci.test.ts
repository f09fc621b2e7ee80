/**
 * `deltaci run` end to end with the default oci backend (crun): the examples that need real
 * isolation — the egress allowlist refuses other destinations, the memory limit ends the job
 * with reason memory_limit — plus hello and a failing job through the real sandbox.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { exampleCopy, parseJson, runCli } from "./cli-helpers.ts";

interface RunJson {
  exitCode: number;
  jobs: Array<{ name: string; state: string; failure: { reason: string; step: number | null; message: string } | null }>;
}

void test("oci: hello runs in the crun sandbox by default (no --isolation flag)", async (t) => {
  const dir = exampleCopy(t, "hello");
  const r = await runCli(["run"], { cwd: dir });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^hello from Delta CI on Linux, job job_\w+$/m);
  assert.doesNotMatch(r.stdout, /WITHOUT a sandbox/);
});

void test("oci: a failing job exits 1 with step_failed", async (t) => {
  const dir = exampleCopy(t, "failing");
  const r = await runCli(["run", "--json"], { cwd: dir });
  assert.equal(r.code, 1, r.stderr);
  const out = parseJson<RunJson>(r.stdout);
  assert.equal(out.jobs[0]?.failure?.reason, "step_failed");
});

void test("oci: a job over its memory limit fails with reason memory_limit", async (t) => {
  const dir = exampleCopy(t, "memory-limit");
  const r = await runCli(["run", "--json"], { cwd: dir });
  assert.equal(r.code, 1, r.stderr);
  const job = parseJson<RunJson>(r.stdout).jobs[0];
  assert.equal(job?.state, "failed", r.stderr);
  assert.equal(job?.failure?.reason, "memory_limit", JSON.stringify(job));
  assert.doesNotMatch(r.stderr, /allocated 512 MiB/);
});

void test("oci: the egress example's job is refused a destination off its allowlist", async (t) => {
  const dir = exampleCopy(t, "egress");
  const r = await runCli(["run"], { cwd: dir });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /refused as expected: 1\.1\.1\.1:443 is not on the allowlist/);
});

void test("oci: the Node.js example passes in the host image", async (t) => {
  const dir = exampleCopy(t, "node");
  const r = await runCli(["run"], { cwd: dir });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /# pass 2/);
});
