/**
 * `deltaci run` end to end with the default oci backend (crun): the examples that need real
 * isolation — the egress allowlist refuses other destinations, the memory limit ends the job
 * with reason memory_limit — plus hello and a failing job through the real sandbox.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { projectRoot } from "../src/config/paths.ts";
import { join } from "node:path";
import { exampleCopy, killOnExit, parseJson, runCli, startCli, tempDir } from "./cli-helpers.ts";

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

void test("oci: artifacts come back to ./.deltaci/artifacts/<job>/", async (t) => {
  const dir = exampleCopy(t, "artifacts-cache");
  const r = await runCli(["run"], { cwd: dir });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(readFileSync(join(dir, ".deltaci", "artifacts", "build", "report", "dist", "report.txt"), "utf8"), /^report of job job_/);
  assert.match(r.stdout, /cache: this is build number \d+ seen by the cache/);
});

void test("oci: Ctrl-C cancels the sandboxed job and exits 130", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "deltaci.yml"), "jobs:\n  slow:\n    steps:\n      - run: echo started; sleep 120\n");
  const run = startCli(["run", "--json"], { cwd: dir });
  killOnExit(t, run);
  await run.waitFor(/^started$/m);
  run.child.kill("SIGINT");
  const r = await run.result;
  assert.equal(r.code, 130, r.stderr);
  assert.equal(parseJson<RunJson>(r.stdout).jobs[0]?.state, "canceled");
});

void test("oci: a job in an OCI image pinned by digest (the Debian test image, built once and cached)", { timeout: 1_800_000 }, async (t) => {
  const script = join(projectRoot(), "scripts", "sandbox-build-debian-image.sh");
  const built = spawnSync("bash", [script, "/var/cache/deltaci/images/debian", "bookworm"], { encoding: "utf8", timeout: 1_500_000, maxBuffer: 16 * 1024 * 1024 });
  const m = /^(\S+) (sha256:[a-f0-9]{64})$/m.exec(built.stdout);
  assert.ok(m?.[1] && m[2], `image builder output: ${built.stdout} ${built.stderr}`);
  const dir = tempDir(t);
  writeFileSync(join(dir, "deltaci.yml"), `jobs:\n  deb:\n    image: "oci:${m[1]}@${m[2]}"\n    steps:\n      - run: echo "debian $(cat /etc/debian_version)"; id -u\n`);
  const v = await runCli(["validate"], { cwd: dir });
  assert.equal(v.code, 0, v.stderr);
  const r = await runCli(["run"], { cwd: dir });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^debian 12\.\d+$/m);
  assert.match(r.stdout, /^0$/m, "root inside the user namespace");
});

void test("oci: a job may name a local OCI image below its source dir, not one elsewhere on the host", { timeout: 1_500_000 }, async (t) => {
  const built = spawnSync("bash", [join(projectRoot(), "scripts/sandbox-build-debian-image.sh"), "/var/cache/deltaci/images/debian", "bookworm"], { encoding: "utf8", timeout: 1_500_000 });
  const m = /^(\S+) (sha256:[a-f0-9]{64})$/m.exec(built.stdout);
  assert.ok(m?.[2], `image builder: ${built.stdout} ${built.stderr}`);
  const digest = m[2];
  const dir = tempDir(t);
  const elsewhere = tempDir(t, "deltaci-cli-elsewhere-");
  for (const target of [join(dir, "image"), join(elsewhere, "image")]) spawnSync("cp", ["-r", "/var/cache/deltaci/images/debian", target]);
  writeFileSync(join(dir, ".gitignore"), "image/\n"); // not packed as the source
  writeFileSync(join(dir, "deltaci.yml"), [
    "jobs:",
    "  inside:",
    `    image: oci:${join(dir, "image")}:bookworm@${digest}`,
    "    steps:",
    "      - run: cat /etc/debian_version",
    "  outside:",
    `    image: oci:${join(elsewhere, "image")}:bookworm@${digest}`,
    "    steps:",
    "      - run: cat /etc/debian_version",
    "",
  ].join("\n"));
  const r = await runCli(["run", "--json"], { cwd: dir, timeoutMs: 600_000 });
  assert.equal(r.code, 1, r.stderr);
  const jobs = parseJson<RunJson>(r.stdout).jobs;
  assert.equal(jobs.find((j) => j.name === "inside")?.state, "succeeded", r.stderr);
  const outside = jobs.find((j) => j.name === "outside");
  assert.equal(outside?.failure?.reason, "sandbox_error", r.stderr);
  assert.match(outside?.failure?.message ?? "", /not an image below the runner's image roots/);
  assert.match(r.stderr, /^inside +│ 12\.\d+$/m, "the inside job printed the image's Debian version");
});
