/**
 * The README's fleet tour as a new user runs it, from a fresh directory with default flags:
 * `deltaci up` → `submit examples/hello/deltaci.yml` → `logs -f` → `status`, real processes
 * and the real oci sandbox. Only the listen port and the slot range are chosen (other tests and
 * `deltaci up`s share this machine). Also: a work root the sandbox cannot reach is refused at start.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import { chmodSync, mkdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { EXAMPLES, killOnExit, parseJson, runCli, startCli, tempDir } from "./cli-helpers.ts";
import { freePort, leftoversUnder } from "./support/fleet-leftovers.ts";

const mode = (path: string) => (statSync(path).mode & 0o777).toString(8);

void test("README tour: up in a fresh directory, submit the hello example, follow its log, status succeeded", async (t) => {
  const dir = tempDir(t, "deltaci-tour-");
  chmodSync(dir, 0o755); // a fresh directory as `mkdir` makes it
  const url = `http://127.0.0.1:${await freePort()}`;
  const up = startCli(["up", "--listen", url.slice("http://".length), "--slot-base", String(randomInt(30_000, 50_000))], { cwd: dir });
  killOnExit(t, up);
  await up.waitFor("server ready at", 60_000);
  assert.equal(mode(join(dir, ".deltaci")), "711", "the data dir is traversable, not listable");
  for (const f of ["api-token", "controller-token", "state.db"]) assert.equal(mode(join(dir, ".deltaci", f)), "600", f);
  assert.equal(mode(join(dir, ".deltaci", "cas")), "700");

  const remote = ["--server", url, "--token-file", ".deltaci/api-token"];
  const submit = await runCli(["submit", join(EXAMPLES, "hello", "deltaci.yml"), ...remote, "--json"], { cwd: dir });
  assert.equal(submit.code, 0, submit.stderr);
  const jobId = parseJson<{ jobs: Array<{ jobId: string }> }>(submit.stdout).jobs[0]?.jobId;
  assert.ok(jobId, submit.stdout);

  const logs = await runCli(["logs", jobId, "-f", ...remote], { cwd: dir });
  assert.equal(logs.code, 0, logs.stderr);
  assert.match(logs.stdout, new RegExp(`hello from Delta CI on Linux, job ${jobId}`));

  const status = await runCli(["status", jobId, ...remote, "--json"], { cwd: dir });
  assert.equal(status.code, 0, status.stderr);
  const job = parseJson<{ state: string; failure: unknown }>(status.stdout);
  assert.equal(job.state, "succeeded", JSON.stringify(job.failure));

  up.child.kill("SIGTERM");
  assert.equal((await up.result).code, 0, up.output());
  const left = await leftoversUnder(dir, join(dir, ".deltaci", "runners"));
  assert.deepEqual(left, { processes: [], containers: [], mounts: [], loops: [], cgroups: [] });
});

void test("up and controller refuse a work root the oci sandbox cannot traverse, before starting anything", async (t) => {
  const dir = tempDir(t, "deltaci-tour-");
  chmodSync(dir, 0o755);
  mkdirSync(join(dir, ".deltaci"), { mode: 0o700 }); // e.g. made by an older version
  const port = await freePort();
  const up = await runCli(["up", "--listen", `127.0.0.1:${port}`, "--slot-base", String(randomInt(30_000, 50_000))], { cwd: dir, timeoutMs: 60_000 });
  assert.equal(up.code, 2, up.stdout + up.stderr);
  assert.match(up.stderr, /slot work dir \S+\/\.deltaci\/runners\/slot-\d+: \S+\/\.deltaci is not traversable by others \(mode 700\)/);
  assert.doesNotMatch(up.stdout, /server ready/);

  const tokenFile = join(dir, "controller-token");
  writeFileSync(tokenFile, "x\n", { mode: 0o600 });
  const ctl = await runCli(["controller", "--server", `http://127.0.0.1:${port}`, "--controller-token-file", tokenFile], { cwd: dir, timeoutMs: 60_000 });
  assert.equal(ctl.code, 2, ctl.stdout + ctl.stderr);
  assert.match(ctl.stderr, /deltaci controller: slot work dir .*\.deltaci is not traversable by others \(mode 700\)/);
});
