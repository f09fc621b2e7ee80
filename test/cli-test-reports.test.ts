/**
 * Test reports and log groups from the CLI, against a real `deltaci up` (process isolation) on
 * loopback: `report: junit` artifacts summarised in `deltaci status` and `--json` (a failed job
 * keeps its report; malformed, hostile and oversized reports are notices, never failures), and
 * `deltaci logs --fold` / `--no-fold`.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { JobStatus } from "../src/protocol/schemas.ts";
import { parseJson, runCli, startCli, type CliRun } from "./cli-helpers.ts";

let up: CliRun;
let root: string;
let server: string;
let tokenFile: string;

const JOB_FILE = `jobs:
  unit:
    steps:
      - name: test
        run: |
          mkdir -p reports
          cat > reports/unit.xml <<'XML'
          <?xml version="1.0" encoding="UTF-8"?>
          <testsuites><testsuite name="math">
            <testcase classname="math.Add" name="adds"/>
            <testcase classname="math.Add" name="overflows"><failure message="expected 2 &lt; 1" type="AssertionError">at add (math.js:3)</failure></testcase>
            <testcase classname="math.Div" name="by zero"><error message="TypeError: x is undefined"/></testcase>
            <testcase name="later"><skipped/></testcase>
          </testsuite></testsuites>
          XML
          echo '<testsuite name="more"><testcase name="fine"/></testsuite>' > reports/more.xml
          exit 1
    artifacts:
      - {name: junit, path: "reports/*.xml", report: junit}
  hostile:
    steps:
      - name: write
        run: |
          cat > bomb.xml <<'XML'
          <?xml version="1.0"?>
          <!DOCTYPE lolz [<!ENTITY lol "lolololololololololol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
          <testsuite><testcase name="&lol3;"/></testsuite>
          XML
          printf '<testsuite><testcase name="a">' > broken.xml
          head -c 5000000 /dev/zero | tr '\\0' ' ' > big.xml
    artifacts:
      - {name: bomb, path: bomb.xml, report: junit}
      - {name: broken, path: broken.xml, report: junit}
      - {name: big, path: big.xml, report: junit}
  groups:
    steps:
      - name: build
        run: |
          echo '::group::install deps'
          echo dep-1; echo dep-2; echo dep-3
          echo '::endgroup::'
          echo '+++ compile'
          echo compiling
          echo '--- hidden'
          echo h1
      - name: check
        run: |
          echo '::group::checks'
          echo check-1; echo check-2
          exit 2
`;

before(async () => {
  root = mkdtempSync(join(tmpdir(), "deltaci-cli-reports-"));
  const slotBase = 30_000 + Math.floor(Math.random() * 20_000);
  up = startCli(
    ["up", "--listen", "127.0.0.1:0", "--data-dir", join(root, "data"), "--work-root", join(root, "runners"), "--isolation", "process", "--max-runners", "3", "--min-idle", "0", "--slot-base", String(slotBase), "--log-level", "warn"],
    { cwd: root, timeoutMs: 600_000 },
  );
  await up.waitFor(/server ready at http:\/\/127\.0\.0\.1:\d+/);
  server = /server ready at (http:\/\/127\.0\.0\.1:\d+)/.exec(up.output())?.[1] ?? "";
  tokenFile = join(root, "data", "api-token");
  writeFileSync(join(root, "deltaci.yml"), JOB_FILE);
});

after(async () => {
  if (up.child.exitCode === null) up.child.kill("SIGTERM");
  await up.result;
  rmSync(root, { recursive: true, force: true });
});

const cli = (args: string[]) => runCli([...args, "--token-file", tokenFile], { cwd: root, env: { DELTACI_SERVER: server } });

async function submitAndWait(): Promise<Map<string, JobStatus>> {
  const sub = await cli(["submit", "--json"]);
  assert.equal(sub.code, 0, sub.stderr);
  const { jobs } = parseJson<{ jobs: Array<{ name: string; jobId: string }> }>(sub.stdout);
  const out = new Map<string, JobStatus>();
  for (const j of jobs) {
    for (let i = 0; ; i++) {
      const r = await cli(["status", j.jobId, "--json"]);
      assert.equal(r.code, 0, r.stderr);
      const st = parseJson<JobStatus>(r.stdout);
      if (st.finishedAt !== null) {
        out.set(j.name, st);
        break;
      }
      assert.ok(i < 600, `job ${j.name} never finished`);
      await new Promise((res) => setTimeout(res, 200));
    }
  }
  return out;
}

let jobs: Promise<Map<string, JobStatus>> | null = null;
const finished = () => (jobs ??= submitAndWait());

void test("a failed job keeps its JUnit report; status --json and status show counts and failed cases", async () => {
  const unit = (await finished()).get("unit")!;
  assert.equal(unit.state, "failed");
  assert.deepEqual(unit.testReports?.map((r) => [r.artifact, r.format, r.counts, r.notice]), [
    ["junit", "junit", { tests: 5, passed: 2, failures: 1, errors: 1, skipped: 1 }, null],
  ]);
  assert.deepEqual(unit.testReports?.[0]?.failed.map((f) => [f.suite, f.classname, f.name, f.kind, f.message, f.type, f.details]), [
    ["math", "math.Add", "overflows", "failure", "expected 2 < 1", "AssertionError", "at add (math.js:3)"],
    ["math", "math.Div", "by zero", "error", "TypeError: x is undefined", null, ""],
  ]);
  const text = await cli(["status", unit.jobId]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /\n {2}tests \(junit, junit\): 5 tests: 2 passed, 1 failed, 1 errors, 1 skipped\n {4}✗ math › math\.Add › overflows: expected 2 < 1\n {4}error math › math\.Div › by zero: TypeError: x is undefined\n/);
});

void test("hostile, malformed and oversized reports are notices; the job still succeeds and the server stays up", async () => {
  const hostile = (await finished()).get("hostile")!;
  assert.equal(hostile.state, "succeeded");
  const by = new Map((hostile.testReports ?? []).map((r) => [r.artifact, r]));
  assert.equal(by.get("bomb")?.counts, null);
  assert.match(by.get("bomb")?.notice ?? "", /DOCTYPE or entity declaration.*refused/);
  assert.match(by.get("broken")?.notice ?? "", /^malformed XML at line 1/);
  assert.match(by.get("big")?.notice ?? "", /^the report is 5000000 bytes, more than the \d+ read: not parsed$/);
  const text = await cli(["status", hostile.jobId]);
  assert.match(text.stdout, /tests \(bomb, junit\):\n {4}notice: the report has a DOCTYPE/);
});

void test("deltaci logs --fold folds groups to a line count and shows a failing step's open group; --no-fold prints all", async () => {
  const groups = (await finished()).get("groups")!;
  assert.equal(groups.state, "failed");
  const folded = await cli(["logs", groups.jobId, "--fold"]);
  assert.equal(folded.code, 0, folded.stderr);
  assert.match(folded.stdout, /▶ build\n▸ install deps\n {2}\(3 lines folded\)\n▾ compile\n {2}compiling\n▸ hidden\n {2}\(1 line folded\)\n✓ build/);
  assert.match(folded.stdout, /▶ check\n▸ checks\n {2}check-1\n {2}check-2\n✗ exit 2 check/);
  assert.doesNotMatch(folded.stdout, /dep-1/);
  const all = await cli(["logs", groups.jobId, "--no-fold"]);
  assert.match(all.stdout, /▸ install deps\n {2}dep-1\n {2}dep-2\n {2}dep-3\n▸ compile\n {2}compiling\n▸ hidden\n {2}h1\n/);
  const piped = await cli(["logs", groups.jobId]);
  assert.equal(piped.stdout, all.stdout, "not a terminal: nothing folded by default");
});
