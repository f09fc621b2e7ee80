/** Job files: parsing, defaults, every kind of error with file:line:column, and the schema file in sync. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { Value } from "@sinclair/typebox/value";
import { JobFileParser, formatIssue, type JobFileIssue } from "../src/jobfile/parse.ts";
import { renderSchemaFile, schemaFilePath } from "../src/jobfile/write-schema.ts";
import { editDistance, suggest } from "../src/jobfile/suggest.ts";
import { SubmittedJobSpec } from "../src/protocol/schemas.ts";
import { defaults } from "../src/config/defaults.ts";
import { projectRoot } from "../src/config/paths.ts";

const parser = new JobFileParser();

function issuesOf(text: string): JobFileIssue[] {
  const r = parser.parse(text, "ci.yml");
  assert.equal(r.ok, false, "expected the file to be rejected");
  return r.ok ? [] : r.issues;
}

function only(text: string): JobFileIssue {
  const issues = issuesOf(text);
  assert.equal(issues.length, 1, `expected one issue, got:\n${issues.map(formatIssue).join("\n")}`);
  return issues[0]!;
}

void test("a full job file becomes SubmittedJobSpecs with units parsed and defaults filled", () => {
  const r = parser.parse(
    `jobs:
  build:
    runs-on: [linux, big]
    image: debian@sha256:${"a".repeat(64)}
    timeout: 10m
    resources: {cpus: 0.5, memory: 512Mi, disk: 1Gi, pids: 100}
    network: {allow: ["registry.npmjs.org:443", "*.example.org"]}
    env: {A: 1, B: true, C: x}
    secrets: [TOKEN]
    cache: [{key: npm, path: .npm}]
    steps:
      - run: |
          echo one
          echo two
        timeout: 30s
        working-directory: sub/dir
        shell: sh -e
        env: {S: "v"}
      - {name: second, run: "true"}
    artifacts:
      - {name: out, path: dist/out.txt}
      - {name: logs, path: ["*.log", "logs/**"], when: always}
  lint:
    runs-on: linux
    steps: [{run: "true"}]
`,
    "ci.yml",
  );
  assert.ok(r.ok, r.ok ? "" : r.issues.map(formatIssue).join("\n"));
  const [build, lint] = r.jobs;
  assert.ok(build && lint);
  assert.deepEqual(build.secrets, ["TOKEN"]);
  const s = build.spec;
  assert.ok(Value.Check(SubmittedJobSpec, s), [...Value.Errors(SubmittedJobSpec, s)].map((e) => `${e.path} ${e.message}`).join("; "));
  assert.deepEqual(s.runsOn, { labels: ["linux", "big"] });
  assert.deepEqual(s.image, { kind: "oci", ref: "debian", digest: `sha256:${"a".repeat(64)}` });
  assert.deepEqual(s.limits, { timeoutMs: 600_000, cpus: 0.5, memoryMiB: 512, diskMiB: 1024, pids: 100, logMiB: defaults.logMiB });
  assert.deepEqual(s.network, { egress: "allowlist", allow: ["registry.npmjs.org:443", "*.example.org"] });
  assert.deepEqual(s.env, { A: "1", B: "true", C: "x" });
  assert.deepEqual(s.caches, [{ key: "npm", path: ".npm", scope: "default", readOnly: false }]);
  assert.deepEqual(s.steps[0], { name: "echo one", run: "echo one\necho two\n", shell: "sh -e", env: { S: "v" }, timeoutMs: 30_000, workingDirectory: "sub/dir" });
  assert.equal(s.steps[1]?.name, "second");
  assert.deepEqual(s.artifacts, [
    { name: "out", paths: ["dist/out.txt"], when: "on_success" },
    { name: "logs", paths: ["*.log", "logs/**"], when: "always" },
  ]);
  assert.deepEqual(lint.spec.runsOn, { labels: ["linux"] });
  assert.deepEqual(lint.spec.image, { kind: "host" });
  assert.deepEqual(lint.spec.network, { egress: "none" });
  assert.deepEqual(lint.spec.limits, {
    timeoutMs: defaults.jobTimeoutMs, cpus: defaults.cpus, memoryMiB: defaults.memoryMiB, diskMiB: defaults.diskMiB, pids: defaults.pids, logMiB: defaults.logMiB,
  });
});

void test("a misspelt key names file:line:column, the field, and a suggestion", () => {
  const i = only(`jobs:\n  build:\n    steps:\n      - name: hi\n        rnu: echo hi\n`);
  assert.equal(formatIssue(i), `ci.yml:5:9: jobs.build.steps[0].rnu: unknown key "rnu" — did you mean "run"?`);
});

void test("unknown keys are errors at every level, with the allowed keys when nothing is close", () => {
  assert.match(formatIssue(only(`jobs:\n  a:\n    stpes: [{run: x}]\n`)), /^ci\.yml:3:5: jobs\.a\.stpes: unknown key "stpes" — did you mean "steps"\?$/);
  assert.match(formatIssue(only(`jobz:\n  a: {steps: [{run: x}]}\n`)).replace(/\n.*/s, ""), /^ci\.yml:1:1: jobz: unknown key "jobz" — did you mean "jobs"\?/);
  const far = only(`jobs:\n  a:\n    steps: [{run: x}]\n    zzzzzz: 1\n`);
  assert.match(far.message, /unknown key "zzzzzz" \(expected one of: runs-on, image, timeout, .*artifacts\)/);
  assert.equal(far.line, 4);
  const net = only(`jobs:\n  a:\n    network: {allwo: [x.org]}\n    steps: [{run: x}]\n`);
  assert.equal(formatIssue(net), `ci.yml:3:15: jobs.a.network.allwo: unknown key "allwo" — did you mean "allow"?`);
});

void test("wrong types and values say what was expected and what was found", () => {
  const cases: Array<[string, RegExp]> = [
    [`jobs:\n  a:\n    timeout: 10 minutes\n    steps: [{run: x}]\n`, /^ci\.yml:3:14: jobs\.a\.timeout: invalid value "10 minutes": expected a duration like 30s, 10m or 1h30m$/],
    [`jobs:\n  a:\n    resources: {memory: 12Xi}\n    steps: [{run: x}]\n`, /^ci\.yml:3:25: jobs\.a\.resources\.memory: expected a size like 512Mi.*got "12Xi"$/],
    [`jobs:\n  a:\n    resources: {cpus: two}\n    steps: [{run: x}]\n`, /jobs\.a\.resources\.cpus: expected a number of CPUs, e\.g\. 2 or 0\.5, got "two"$/],
    [`jobs:\n  a:\n    image: debian:12\n    steps: [{run: x}]\n`, /^ci\.yml:3:12: jobs\.a\.image: .*expected "host" or an OCI image pinned by digest/],
    [`jobs:\n  a:\n    network: open\n    steps: [{run: x}]\n`, /jobs\.a\.network: expected "none" or \{allow: .*got "open"$/],
    [`jobs:\n  a:\n    runs-on: [linux, 5]\n    steps: [{run: x}]\n`, /^ci\.yml:3:22: jobs\.a\.runs-on\[1\]: expected a label .*got 5 \(a number\)$/],
    [`jobs:\n  a:\n    steps: [{run: x}]\n    artifacts: [{name: r, path: x, when: sometimes}]\n`, /jobs\.a\.artifacts\[0\]\.when: expected "on_success" or "always", got "sometimes"$/],
    [`jobs:\n  a:\n    steps: []\n`, /^ci\.yml:3:12: jobs\.a\.steps: expected at least 1 item/],
    [`jobs:\n  a:\n    steps: {run: x}\n`, /jobs\.a\.steps: expected a list of steps, got a map$/],
    [`jobs:\n  a:\n    steps:\n      - name: x\n`, /^ci\.yml:4:9: jobs\.a\.steps\[0\]: missing required key "run"$/],
    [`jobs:\n  "bad job": {steps: [{run: x}]}\n`, /^ci\.yml:2:3: jobs\["bad job"\]: invalid name "bad job": expected a job name/],
    [`jobs:\n  a:\n    env: {"1X": y}\n    steps: [{run: x}]\n`, /jobs\.a\.env\.1X: invalid name "1X": expected an environment variable name/],
    [`jobs:\n  a:\n    steps: [{run: x, working-directory: ../up}]\n`, /jobs\.a\.steps\[0\]\.working-directory: expected a path inside the workspace/],
    [`jobs:\n  a:\n    resources: {memory: 1Mi}\n    steps: [{run: x}]\n`, /^ci\.yml:3:25: jobs\.a\.resources\.memory: expected at least 4Mi/],
    [`jobs:\n  a:\n    steps: [{run: x}]\n    artifacts: [{name: r, path: x}, {name: r, path: y}]\n`, /jobs\.a\.artifacts\[1\]\.name: duplicate artifact name "r"$/],
    [`jobs: {}\n`, /^ci\.yml:1:7: jobs: expected at least 1 entry/],
    [``, /^ci\.yml:1:1: \(file\): the file is empty/],
  ];
  for (const [text, re] of cases) {
    const issues = issuesOf(text);
    assert.ok(issues.some((i) => re.test(formatIssue(i))), `for:\n${text}\nexpected ${re}, got:\n${issues.map(formatIssue).join("\n")}`);
  }
});

void test("report: junit marks an artifact as a test report, kept by default even when the job fails", () => {
  const r = parser.parse(`jobs:\n  a:\n    steps: [{run: x}]\n    artifacts:\n      - {name: junit, path: [reports/*.xml], report: junit}\n      - {name: j2, path: r.xml, report: junit, when: on_success}\n`, "ci.yml");
  assert.ok(r.ok, r.ok ? "" : r.issues.map(formatIssue).join("\n"));
  assert.deepEqual(r.jobs[0]?.spec.artifacts, [
    { name: "junit", paths: ["reports/*.xml"], when: "always", report: "junit" },
    { name: "j2", paths: ["r.xml"], when: "on_success", report: "junit" },
  ]);
  assert.ok(Value.Check(SubmittedJobSpec, r.jobs[0]?.spec));
  assert.equal(formatIssue(only(`jobs:\n  a:\n    steps: [{run: x}]\n    artifacts:\n      - {name: t, path: r.xml, report: junitxml}\n`)),
    `ci.yml:5:40: jobs.a.artifacts[0].report: expected "junit": the files are JUnit XML test reports, summarised by the server, got "junitxml"`);
  assert.match(formatIssue(only(`jobs:\n  a:\n    steps: [{run: x}]\n    artifacts: [{name: t, path: r.xml, reprot: junit}]\n`)), /^ci\.yml:4:40: jobs\.a\.artifacts\[0\]\.reprot: unknown key "reprot" — did you mean "report"\?$/);
});

void test("YAML syntax errors and duplicate keys have positions", () => {
  const dup = issuesOf(`jobs:\n  a:\n    steps: [{run: x}]\n    steps: [{run: y}]\n`);
  assert.match(formatIssue(dup[0]!), /^ci\.yml:4:5: \(yaml\): .*unique/i);
  const syntax = issuesOf(`jobs:\n  a:\n    steps: [{run: x}\n`);
  assert.match(formatIssue(syntax[0]!), /^ci\.yml:\d+:\d+: \(yaml\): /);
});

void test("all errors of a file are reported at once, in line order", () => {
  const issues = issuesOf(`jobs:\n  a:\n    timeout: soon\n    steps:\n      - rnu: x\n    artifacts: [{name: "a b", path: x}]\n`);
  assert.deepEqual(issues.map((i) => i.line), [3, 5, 6]);
});

void test("suggestions: edit distance with transpositions, and nothing for far-off words", () => {
  assert.equal(editDistance("rnu", "run"), 1);
  assert.equal(editDistance("kitten", "sitting"), 3);
  assert.equal(suggest("imgae", ["image", "steps"]), "image");
  assert.equal(suggest("working_directory", ["working-directory", "env"]), "working-directory");
  assert.equal(suggest("xyz", ["image", "steps"]), null);
});

void test("schema/job-file.schema.json is generated from the TypeBox source (run src/jobfile/write-schema.ts)", () => {
  assert.equal(readFileSync(schemaFilePath(), "utf8"), renderSchemaFile());
});

void test("every example job file is valid", () => {
  const dir = join(projectRoot(), "examples");
  const files = readdirSync(dir).map((d) => join(dir, d, "deltaci.yml"));
  assert.ok(files.length >= 6);
  for (const f of files) {
    const r = parser.parse(readFileSync(f, "utf8"), f);
    assert.ok(r.ok, r.ok ? "" : r.issues.map(formatIssue).join("\n"));
  }
});
