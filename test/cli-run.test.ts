/**
 * `deltaci run` end to end, as a user runs it: a child process `node bin/deltaci.js run …` with
 * its embedded server, controller and runners, on every example, with the `process` backend
 * (the fast path). The oci backend is covered by cli-run-oci.test.ts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { exampleCopy, killOnExit, parseJson, runCli, startCli, tempDir } from "./cli-helpers.ts";

interface RunJson {
  result: string;
  exitCode: number;
  jobs: Array<{
    name: string; jobId: string; state: string; result: string;
    failure: { reason: string; step: number | null; message: string } | null;
    steps: Array<{ name: string; exitCode: number | null }>;
    artifacts: Array<{ name: string; path: string; size: number }>;
  }>;
}

const P = ["--isolation", "process"];

void test("hello: exit 0, the step's output under a step header, a summary", async (t) => {
  const dir = exampleCopy(t, "hello");
  const r = await runCli(["run", ...P], { cwd: dir });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /▶ say hello\nhello from Delta CI on Linux, job job_\w+\n✓ say hello \(/);
  assert.match(r.stdout, /Summary\n✓ hello +succeeded .*\n1 job succeeded in /);
  assert.match(r.stdout, /warning: --isolation process runs the steps WITHOUT a sandbox/);
  assert.ok(!r.stdout.includes("\x1b["), "no colours when piped");
});

void test("a failing job: exit 1, the failed step named, later steps skipped; --json is parseable", async (t) => {
  const dir = exampleCopy(t, "failing");
  const r = await runCli(["run", ...P, "--json"], { cwd: dir });
  assert.equal(r.code, 1, r.stderr);
  const out = parseJson<RunJson>(r.stdout);
  assert.equal(out.result, "failed");
  assert.equal(out.exitCode, 1);
  const job = out.jobs[0];
  assert.ok(job);
  assert.equal(job.state, "failed");
  assert.equal(job.failure?.reason, "step_failed");
  assert.equal(job.failure?.step, 1);
  assert.deepEqual(job.steps.map((s) => s.exitCode), [0, 3, null]);
  assert.match(r.stderr, /expected 42, got 41/, "logs go to stderr with --json");
  const text = await runCli(["run", ...P], { cwd: dir });
  assert.equal(text.code, 1);
  assert.match(text.stdout, /✗ broken +failed .* step_failed in step 2 "check the answer"/);
  assert.match(text.stdout, /– never runs \(skipped/);
});

void test("the Node.js example passes its tests in the host image", async (t) => {
  const dir = exampleCopy(t, "node");
  const r = await runCli(["run", ...P], { cwd: dir });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /# pass 2/);
  assert.match(r.stdout, /✓ unit tests/);
});

void test("artifacts are downloaded to ./.deltaci/artifacts/<job>/<name>/ (a file under its relative path, and a tar of several extracted)", async (t) => {
  const dir = exampleCopy(t, "artifacts-cache");
  const r = await runCli(["run", ...P, "--json"], { cwd: dir });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const out = parseJson<RunJson>(r.stdout);
  const job = out.jobs[0];
  assert.ok(job);
  assert.deepEqual(job.artifacts.map((a) => a.name).sort(), ["build-log", "report"]);
  const base = join(dir, ".deltaci", "artifacts", "build");
  assert.match(readFileSync(join(base, "report", "dist", "report.txt"), "utf8"), /^report of job job_/);
  const logDir = join(base, "build-log");
  const files = readdirSync(logDir, { recursive: true }).map(String).sort();
  assert.ok(files.some((f) => f.endsWith("report.txt")) && files.some((f) => f.endsWith("built-at.txt")), files.join(","));
  assert.ok(job.artifacts.every((a) => a.path.startsWith(".deltaci/artifacts/build/")));
});

void test("several jobs run at once, each line prefixed with its job; --job selects", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "deltaci.yml"), "jobs:\n  one:\n    steps: [{run: echo from-one}]\n  two:\n    steps: [{run: echo from-two}]\n  three:\n    steps: [{run: exit 1}]\n");
  const r = await runCli(["run", ...P, "--job", "one", "--job", "two"], { cwd: dir });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^one +│ from-one$/m);
  assert.match(r.stdout, /^two +│ from-two$/m);
  assert.match(r.stdout, /2 jobs succeeded/);
  const bad = await runCli(["run", ...P, "--job", "nope"], { cwd: dir });
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /no job "nope" in the file \(jobs: one, two, three\)/);
});

void test("secrets reach the step masked, never printed; --fork gets none; a missing one is a usage error", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "deltaci.yml"), `jobs:\n  s:\n    secrets: [TOKEN]\n    steps:\n      - run: 'echo "token=[$TOKEN]"; echo "set=\${TOKEN:+yes}"'\n`);
  const value = "hunter2-very-secret";
  const r = await runCli(["run", ...P, "--secret", "TOKEN"], { cwd: dir, env: { TOKEN: value } });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.ok(!r.stdout.includes(value) && !r.stderr.includes(value), "the value is never printed");
  assert.match(r.stdout, /token=\[\*\*\*\]/);
  assert.match(r.stdout, /set=yes/);
  const fork = await runCli(["run", ...P, "--fork", "--secret", `TOKEN=${value}`], { cwd: dir });
  assert.equal(fork.code, 0, fork.stdout + fork.stderr);
  assert.match(fork.stdout, /set=$/m);
  const missing = await runCli(["run", ...P], { cwd: dir, env: { TOKEN: "" } });
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /job "s" needs secret TOKEN/);
});

void test("invalid input exits 2 before anything runs: a bad file (with line and field), no file, a bad flag", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "deltaci.yml"), "jobs:\n  build:\n    steps:\n      - rnu: echo hi\n");
  const r = await runCli(["run", ...P], { cwd: dir });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^deltaci\.yml:4:9: jobs\.build\.steps\[0\]\.rnu: unknown key "rnu" — did you mean "run"\?$/m);
  assert.ok(!existsSync(join(dir, ".deltaci")), "nothing ran");
  const v = await runCli(["validate", "deltaci.yml"], { cwd: dir });
  assert.equal(v.code, 2);
  assert.match(v.stderr, /1 error in deltaci\.yml/);
  const empty = tempDir(t);
  const none = await runCli(["run", ...P], { cwd: empty });
  assert.equal(none.code, 2);
  assert.match(none.stderr, /no job file given and none of \.deltaci\.yml/);
  const flag = await runCli(["run", "--bogus"], { cwd: empty });
  assert.equal(flag.code, 2);
  assert.match(flag.stderr, /unknown option '--bogus'/);
  const iso = await runCli(["run", "--isolation", "vm"], { cwd: dir });
  assert.equal(iso.code, 2);
});

void test("Ctrl-C cancels the running job gracefully, waits for it, and exits 130", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "deltaci.yml"), "jobs:\n  slow:\n    steps:\n      - run: echo started; sleep 120; echo never\n      - run: echo not-this-either\n");
  const run = startCli(["run", ...P, "--json"], { cwd: dir });
  killOnExit(t, run);
  await run.waitFor(/^started$/m);
  run.child.kill("SIGINT");
  const r = await run.result;
  assert.equal(r.code, 130, r.stderr);
  assert.match(r.stderr, /interrupted: canceling the jobs/);
  const out = parseJson<RunJson>(r.stdout);
  assert.equal(out.result, "interrupted");
  assert.equal(out.jobs[0]?.state, "canceled");
  assert.doesNotMatch(r.stderr, /^(never|not-this-either)$/m);
});

void test("a second Ctrl-C cancels hard: a step that ignores SIGTERM is killed at once", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "deltaci.yml"), "jobs:\n  stubborn:\n    steps:\n      - run: trap 'echo got-term' TERM; echo started; for i in $(seq 1 600); do sleep 0.2; done\n");
  const run = startCli(["run", ...P], { cwd: dir });
  killOnExit(t, run);
  await run.waitFor(/^started$/m);
  run.child.kill("SIGINT");
  await run.waitFor("interrupted: canceling the jobs");
  await run.waitFor("got-term");
  run.child.kill("SIGINT");
  const r = await run.result;
  assert.equal(r.code, 130, r.stdout + r.stderr);
  assert.match(r.stdout, /canceling hard/);
  assert.match(r.stdout, /⊘ stubborn +canceled/);
});

void test("a job nothing on this machine can run (another os) is reported and canceled, not waited for", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "deltaci.yml"), "jobs:\n  win:\n    runs-on: {os: windows}\n    steps: [{run: echo hi}]\n");
  const r = await runCli(["run", ...P], { cwd: dir });
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /cannot run here: .*needs os windows/);
  assert.match(r.stdout, /⊘ win +canceled/);
});
