/**
 * `source: {git, ref, commit?}` end to end: `deltaci run` (oci, the default) on a job file whose
 * jobs clone a bare repository served over dumb HTTP from a test host in our own network
 * namespace. A git job sees the cloned files (of the ref, the pinned commit, or without ref the
 * default branch) and not the local checkout; a commit not on its ref fails the job; a job
 * without a git source in the same file still gets the packed local directory. `deltaci
 * validate` refuses a git host that is not on the allowlist.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseJson, runCli, tempDir } from "./cli-helpers.ts";
import { startGitHttpHost, type GitHttpHost } from "./support/git-http-host.ts";

interface RunJson {
  exitCode: number;
  jobs: Array<{ name: string; state: string; failure: { reason: string; message: string } | null }>;
}

void describe("job file git source", { timeout: 600_000 }, () => {
  let git: GitHttpHost;
  before(async () => {
    git = await startGitHttpHost();
  });
  after(() => git?.close());

  void it("deltaci run: git jobs clone the ref or the pinned commit; only the other job gets the local directory", async (t) => {
    const dir = tempDir(t);
    const allow = `network: {allow: ["${git.address}:${git.port}"]}`;
    writeFileSync(join(dir, "local-only.txt"), "from the local checkout\n");
    writeFileSync(join(dir, "deltaci.yml"), `jobs:
  tip:
    ${allow}
    source: {git: "${git.url}", ref: main}
    steps:
      - run: |
          echo "content: $(cat hello.txt)"
          echo "head: $(git rev-parse HEAD)"
          if [ -e local-only.txt ]; then echo "local file: present"; else echo "local file: absent"; fi
  pinned:
    ${allow}
    source:
      git: "${git.url}"
      ref: main
      commit: "${git.first}"
    steps:
      - run: 'echo "content: $(cat hello.txt)"; echo "head: $(git rev-parse HEAD)"'
  default:
    ${allow}
    source: {git: "${git.url}"}
    steps:
      - run: 'echo "content: $(cat hello.txt) on $(git symbolic-ref --short HEAD)"'
  local:
    steps:
      - run: 'cat local-only.txt; if [ -e hello.txt ]; then echo "hello.txt: present"; else echo "hello.txt: absent"; fi'
`);
    const v = await runCli(["validate"], { cwd: dir });
    assert.equal(v.code, 0, v.stderr);
    const r = await runCli(["run", "--json"], { cwd: dir, timeoutMs: 420_000 });
    const out = parseJson<RunJson>(r.stdout);
    assert.deepEqual(out.jobs.map((j) => [j.name, j.state]), [["tip", "succeeded"], ["pinned", "succeeded"], ["default", "succeeded"], ["local", "succeeded"]], r.stderr);
    assert.equal(r.code, 0, r.stderr);
    const logs = r.stderr; // with --json the jobs' logs go to stderr, each line prefixed with its job
    assert.match(logs, /^tip +│ content: second$/m);
    assert.match(logs, new RegExp(`^tip +│ head: ${git.second}$`, "m"));
    assert.match(logs, /^tip +│ local file: absent$/m);
    assert.match(logs, /^pinned +│ content: first$/m);
    assert.match(logs, new RegExp(`^pinned +│ head: ${git.first}$`, "m"));
    assert.match(logs, /^default +│ content: second on main$/m, "no ref: the remote's default branch");
    assert.match(logs, /^local +│ from the local checkout$/m);
    assert.match(logs, /^local +│ hello\.txt: absent$/m);
    assert.match(logs, /source of tip: git http:\S+ ref main \(cloned in the sandbox\)/);
  });

  void it("deltaci run: a job file of git jobs only packs nothing; a missing ref, or a commit not on the ref, fails with source_error", async (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, "deltaci.yml"), `jobs:
  missing:
    network: {allow: ["${git.address}:${git.port}"]}
    source: {git: "${git.url}", ref: no-such-branch}
    steps: [{run: echo RAN-USER-STEP}]
  off-ref:
    network: {allow: ["${git.address}:${git.port}"]}
    source: {git: "${git.url}", ref: main, commit: "${git.other}"}
    steps: [{run: echo RAN-USER-STEP}]
`);
    const r = await runCli(["run", "--json"], { cwd: dir, timeoutMs: 300_000 });
    assert.equal(r.code, 1, r.stderr);
    const job = parseJson<RunJson>(r.stdout).jobs[0];
    assert.equal(job?.state, "errored", r.stderr);
    assert.equal(job?.failure?.reason, "source_error", JSON.stringify(job));
    assert.ok(job?.failure?.message.includes(git.url), JSON.stringify(job));
    const offRef = parseJson<RunJson>(r.stdout).jobs[1];
    assert.equal(offRef?.failure?.reason, "source_error", JSON.stringify(offRef));
    assert.ok(offRef?.failure?.message.includes(`commit ${git.other} is not on ref main of ${git.url}`), JSON.stringify(offRef));
    assert.doesNotMatch(r.stderr, /RAN-USER-STEP/);
    assert.doesNotMatch(r.stderr, /source: \d+ files/, "nothing packed when every job has a git source");
  });

  void it("deltaci validate: a git host off the allowlist is an error with file:line:column (exit 2)", async (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, "ci.yml"), `jobs:\n  build:\n    source: {git: "${git.url}", ref: main}\n    steps: [{run: "true"}]\n`);
    const v = await runCli(["validate", "ci.yml"], { cwd: dir });
    assert.equal(v.code, 2, v.stdout + v.stderr);
    assert.match(v.stderr, new RegExp(`^ci\\.yml:3:19: jobs\\.build\\.source\\.git: the git host ${git.address.replace(/\./g, "\\.")}:${git.port} is not on the job's network allowlist`, "m"));
    const r = await runCli(["run", "ci.yml"], { cwd: dir });
    assert.equal(r.code, 2, "run validates first: nothing starts");
  });
});
