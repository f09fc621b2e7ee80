/**
 * The remote commands (submit, jobs, status, logs, cancel, artifacts) against a real
 * `deltaci up` (server + controller + runners) started as a child process on a free port.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseJson, runCli, startCli, type CliRun } from "./cli-helpers.ts";

let up: CliRun;
let root: string;
/** The job file's directory, packed as the source: beside the server's data dir, not around it. */
let project: string;
let server: string;
let tokenFile: string;

interface Status {
  jobId: string;
  state: string;
  failure: { reason: string } | null;
  artifacts: Array<{ name: string }>;
}

before(async () => {
  root = mkdtempSync(join(tmpdir(), "deltaci-cli-remote-"));
  up = startCli(
    ["up", "--listen", "127.0.0.1:0", "--data-dir", join(root, "data"), "--work-root", join(root, "runners"), "--isolation", "process", "--max-runners", "3", "--min-idle", "1", "--log-level", "warn"],
    { cwd: root, timeoutMs: 900_000 },
  );
  await up.waitFor(/server ready at http:\/\/127\.0\.0\.1:\d+[^]*API token: .*\n/);
  server = /server ready at (http:\/\/127\.0\.0\.1:\d+)/.exec(up.output())?.[1] ?? "";
  tokenFile = join(root, "data", "api-token");
  assert.match(up.output(), new RegExp(`API token: +${tokenFile.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
  project = join(root, "project");
  mkdirSync(project);
  writeFileSync(join(project, "deltaci.yml"), [
    "jobs:",
    "  ok:",
    "    steps:",
    "      - {name: make, run: 'mkdir -p out && echo built > out/result.txt && echo remote-hello'}",
    "    artifacts: [{name: result.txt, path: out/result.txt}]",
    "  bad:",
    "    steps: [{run: 'echo about to fail; exit 4'}]",
    "  slow:",
    "    steps: [{run: 'echo slow-started; sleep 120'}]",
    "",
  ].join("\n"));
});

after(async () => {
  if (up.child.exitCode === null) up.child.kill("SIGTERM");
  await up.result;
  rmSync(root, { recursive: true, force: true });
});

const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => runCli([...args], { cwd: project, env: { DELTACI_SERVER: server, ...env } });
const withToken = (args: string[]) => [...args, "--token-file", tokenFile];

async function waitState(jobId: string, states: string[]): Promise<Status> {
  for (let i = 0; i < 600; i++) {
    const r = await cli(withToken(["status", jobId, "--json"]));
    assert.equal(r.code, 0, r.stderr);
    const st = parseJson<Status>(r.stdout);
    if (states.includes(st.state)) return st;
    await new Promise((res) => setTimeout(res, 250));
  }
  throw new Error(`job ${jobId} never reached ${states.join("|")}`);
}

void test("submit --json names each job's id; status, logs, jobs and artifacts follow", async () => {
  const sub = await cli(withToken(["submit", "--job", "ok", "--job", "bad", "--json"]));
  assert.equal(sub.code, 0, sub.stderr);
  const { jobs } = parseJson<{ jobs: Array<{ name: string; jobId: string }> }>(sub.stdout);
  assert.deepEqual(jobs.map((j) => j.name), ["ok", "bad"]);
  const okId = jobs[0]?.jobId ?? "";
  const badId = jobs[1]?.jobId ?? "";
  assert.match(okId, /^job_/);

  const logs = await cli(withToken(["logs", okId, "-f"]));
  assert.equal(logs.code, 0, logs.stderr);
  assert.match(logs.stdout, /▶ make\nremote-hello\n✓ make/);

  const ok = await waitState(okId, ["succeeded", "failed", "errored"]);
  assert.equal(ok.state, "succeeded");
  const bad = await waitState(badId, ["succeeded", "failed", "errored"]);
  assert.equal(bad.state, "failed");
  assert.equal(bad.failure?.reason, "step_failed");

  const text = await cli(withToken(["status", badId]));
  assert.match(text.stdout, /failure: step_failed in step 1/);

  const list = await cli(withToken(["jobs", "--json"]));
  const all = parseJson<Status[]>(list.stdout);
  assert.ok(all.some((j) => j.jobId === okId) && all.some((j) => j.jobId === badId));
  const table = await cli(withToken(["jobs"]));
  assert.match(table.stdout, /^JOB ID +NAME +STATE/m);
  assert.match(table.stdout, new RegExp(`^${badId} +bad +failed .*step_failed$`, "m"));

  const dl = join(root, "dl");
  const arts = await cli(withToken(["artifacts", okId, "--download", dl, "--json"]));
  assert.equal(arts.code, 0, arts.stderr);
  assert.deepEqual(parseJson<Array<{ name: string }>>(arts.stdout).map((a) => a.name), ["result.txt"]);
  assert.equal(readFileSync(join(dl, "result.txt", "out", "result.txt"), "utf8"), "built\n");
});

void test("cancel stops a running job; the token comes from DELTACI_API_TOKEN too", async () => {
  const token = readFileSync(tokenFile, "utf8").trim();
  const sub = await cli(["submit", "--job", "slow", "--json"], { DELTACI_API_TOKEN: token });
  assert.equal(sub.code, 0, sub.stderr);
  const jobId = parseJson<{ jobs: Array<{ jobId: string }> }>(sub.stdout).jobs[0]?.jobId ?? "";
  await waitState(jobId, ["running"]);
  const c = await cli(["cancel", jobId, "--json"], { DELTACI_API_TOKEN: token });
  assert.equal(c.code, 0, c.stderr);
  assert.match(parseJson<{ state: string }>(c.stdout).state, /^(canceling|canceled)$/);
  assert.equal((await waitState(jobId, ["canceled", "failed", "errored", "succeeded"])).state, "canceled");
});

void test("errors: a wrong token exits 2 and says where the token came from; an unknown job exits 2; no server exits 1", async () => {
  const wrong = join(root, "wrong-token");
  writeFileSync(wrong, "dci_api_nope");
  const r = await cli(["jobs", "--token-file", wrong]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /refused the API token \(token from: --token-file\)/);
  const missing = await cli(withToken(["status", "job_doesnotexist"]));
  assert.equal(missing.code, 2);
  const down = await runCli(["jobs", "--server", "http://127.0.0.1:1", "--token-file", tokenFile], { cwd: root });
  assert.equal(down.code, 1);
  assert.match(down.stderr, /cannot reach the server at http:\/\/127\.0\.0\.1:1/);
});
