/** Job files' `source: {git, ref, commit?}`: the spec it becomes, and every error with file:line:column and the field. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Value } from "@sinclair/typebox/value";
import { JobFileParser, formatIssue, type JobFileIssue } from "../src/jobfile/parse.ts";
import { allowlistCovers, refProblem } from "../src/jobfile/source.ts";
import { SubmittedJobSpec } from "../src/protocol/schemas.ts";
import { allowMatch } from "../src/sandbox/oci/egress-proxy.ts";

const parser = new JobFileParser();
const SHA1 = "0123456789abcdef0123456789abcdef01234567";
const SHA256 = "ab".repeat(32);

function issuesOf(text: string): JobFileIssue[] {
  const r = parser.parse(text, "ci.yml");
  assert.equal(r.ok, false, "expected the file to be rejected");
  return r.ok ? [] : r.issues;
}

/** A one-job file with the given `source:` block (indented under the job) and network. */
const file = (source: string, network = `network: {allow: ["git.example.org:443"]}`) =>
  `jobs:\n  build:\n    ${network}\n    source:\n${source.split("\n").map((l) => `      ${l}`).join("\n")}\n    steps: [{run: make}]\n`;

void test("a git source becomes the JobSpec's {kind: git, url, ref, commit}", () => {
  const r = parser.parse(file(`git: https://git.example.org/team/app.git\nref: main\ncommit: ${SHA1.toUpperCase()}`), "ci.yml");
  assert.ok(r.ok, r.ok ? "" : r.issues.map(formatIssue).join("\n"));
  const spec = r.jobs[0]!.spec;
  assert.deepEqual(spec.source, { kind: "git", url: "https://git.example.org/team/app.git", ref: "main", commit: SHA1 });
  assert.ok(Value.Check(SubmittedJobSpec, spec), [...Value.Errors(SubmittedJobSpec, spec)].map((e) => `${e.path} ${e.message}`).join("; "));
  const tag = parser.parse(file(`git: https://git.example.org/team/app.git\nref: release/v1.2.0\ncommit: "${SHA256}"`), "ci.yml");
  assert.ok(tag.ok && tag.jobs[0]!.spec.source.kind === "git");
  assert.deepEqual(tag.ok ? tag.jobs[0]!.spec.source : null, { kind: "git", url: "https://git.example.org/team/app.git", ref: "release/v1.2.0", commit: SHA256 });
  const plain = parser.parse(`jobs:\n  a:\n    steps: [{run: x}]\n`, "ci.yml");
  assert.deepEqual(plain.ok ? plain.jobs[0]!.spec.source : null, { kind: "none" }, "no source: key → filled in by the submitting command");
});

void test("ref defaults to HEAD, the remote's default branch; an explicit HEAD is the same", () => {
  for (const source of [`git: https://git.example.org/a.git`, `git: https://git.example.org/a.git\nref: HEAD`]) {
    const r = parser.parse(file(`${source}\ncommit: ${SHA1}`), "ci.yml");
    assert.ok(r.ok, r.ok ? "" : r.issues.map(formatIssue).join("\n"));
    assert.deepEqual(r.jobs[0]!.spec.source, { kind: "git", url: "https://git.example.org/a.git", ref: "HEAD", commit: SHA1 }, source);
    assert.ok(Value.Check(SubmittedJobSpec, r.jobs[0]!.spec));
  }
});

void test("the git host must be covered by network.allow: wildcard and port rules as the egress proxy's", () => {
  const ok = (network: string, url = "https://git.example.org/a.git") => parser.parse(file(`git: ${url}\nref: main`, network), "ci.yml").ok;
  assert.ok(ok(`network: {allow: ["*.example.org:443"]}`));
  assert.ok(ok(`network: {allow: ["git.example.org"]}`), "no port = any port");
  assert.ok(ok(`network: {allow: ["git.example.org:80"]}`, "http://git.example.org/a.git"), "http defaults to port 80");
  assert.ok(ok(`network: {allow: ["git.example.org:8080"]}`, "http://git.example.org:8080/a.git"));
  assert.ok(ok(`network: {allow: ["10.1.2.3:8090"]}`, "http://10.1.2.3:8090/a.git"));

  const none = issuesOf(file(`git: https://git.example.org/a.git\nref: main`, "network: none"));
  assert.deepEqual(none.map(formatIssue), [
    `ci.yml:5:12: jobs.build.source.git: the git host git.example.org:443 is not on the job's network allowlist (this job's network is "none"): ` +
      `the clone runs inside the sandbox, through the job's egress policy; add it: network: {allow: ["git.example.org:443"]}`,
  ]);
  const cases: Array<[string, string]> = [
    [`network: {allow: ["example.org:443"]}`, "https://git.example.org/a.git"],
    [`network: {allow: ["*.example.org:443"]}`, "https://example.org/a.git"],
    [`network: {allow: ["git.example.org:443"]}`, "http://git.example.org/a.git"],
    [`network: {allow: ["git.example.org:443"]}`, "https://git.example.org:8443/a.git"],
  ];
  for (const [network, url] of cases) {
    const issues = issuesOf(file(`git: ${url}\nref: main`, network));
    assert.equal(issues.length, 1, issues.map(formatIssue).join("\n"));
    assert.match(formatIssue(issues[0]!), /^ci\.yml:5:12: jobs\.build\.source\.git: the git host \S+ is not on the job's network allowlist \(no entry of network\.allow covers it\)/);
  }
});

void test("allowlistCovers agrees with the egress proxy's allowMatch", () => {
  const patterns = [["git.example.org"], ["git.example.org:443"], ["*.example.org"], ["*.example.org:80"], ["example.org:443", "other.org"], ["GIT.Example.org:443"], []];
  const targets: Array<[string, number]> = [["git.example.org", 443], ["git.example.org", 80], ["example.org", 443], ["a.b.example.org", 80], ["xexample.org", 443], ["other.org", 1]];
  for (const p of patterns) {
    for (const [host, port] of targets) assert.equal(allowlistCovers(p, host, port), allowMatch(p, host, port), `${JSON.stringify(p)} ${host}:${port}`);
  }
});

void test("URL errors: not http(s), credentials (with a hint to use a secret), query, no host", () => {
  const cases: Array<[string, RegExp]> = [
    [`git: git@git.example.org:team/app.git\nref: main`, /^ci\.yml:5:12: jobs\.build\.source\.git: invalid value "git@git\.example\.org:team\/app\.git": expected the repository's http or https URL \(not ssh/],
    [`git: ssh://git.example.org/team/app.git\nref: main`, /^ci\.yml:5:12: jobs\.build\.source\.git: invalid value "ssh:.*expected the repository's http or https URL/],
    [`git: "https://bob:hunter2@git.example.org/team/app.git"\nref: main`, /^ci\.yml:5:12: jobs\.build\.source\.git: credentials in the URL are not allowed \("user:\*\*\*@"\): .*secrets: \[GIT_TOKEN\].*git clone https:\/\/x-access-token:\$GIT_TOKEN@git\.example\.org\/team\/app\.git/],
    [`git: "https://tok@git.example.org/a.git"\nref: main`, /jobs\.build\.source\.git: credentials in the URL are not allowed \("user@"\)/],
    [`git: "https://git.example.org/a.git?x=1"\nref: main`, /^ci\.yml:5:12: jobs\.build\.source\.git: a git URL has no \?query or #fragment/],
    [`git: "https://git.example.org:99999/a.git"\nref: main`, /jobs\.build\.source\.git: invalid URL "https:\/\/git\.example\.org:99999\/a\.git"/],
  ];
  for (const [source, re] of cases) {
    const issues = issuesOf(file(source));
    assert.ok(issues.some((i) => re.test(formatIssue(i))), `for:\n${source}\nexpected ${re}, got:\n${issues.map(formatIssue).join("\n")}`);
    assert.ok(!issues.map(formatIssue).join("\n").includes("hunter2"), "a password is never echoed");
  }
});

void test("ref and commit errors name the field and what a valid one looks like", () => {
  const cases: Array<[string, RegExp]> = [
    [`git: https://git.example.org/a.git\nrefs: main`, /^ci\.yml:6:7: jobs\.build\.source\.refs: unknown key "refs" — did you mean "ref"\?$/],
    [`git: https://git.example.org/a.git\nref: refs/heads/main`, /^ci\.yml:6:12: jobs\.build\.source\.ref: invalid ref "refs\/heads\/main": expected a short branch or tag name .* write "main"$/],
    [`git: https://git.example.org/a.git\nref: "@"`, /^ci\.yml:6:12: jobs\.build\.source\.ref: invalid ref "@": "@" is not a branch or tag name; write HEAD \(or leave ref out\) for the default branch/],
    [`ref: main`, /^ci\.yml:5:7: jobs\.build\.source: missing required key "git"$/],
    [`git: https://git.example.org/a.git\nref: a..b`, /jobs\.build\.source\.ref: invalid ref "a\.\.b": a branch or tag name cannot contain "\.\."$/],
    [`git: https://git.example.org/a.git\nref: "-upload-pack=x"`, /jobs\.build\.source\.ref: invalid ref "-upload-pack=x": a branch or tag name cannot start with "-"$/],
    [`git: https://git.example.org/a.git\nref: "a b"`, /jobs\.build\.source\.ref: .*cannot contain spaces or control characters$/],
    [`git: https://git.example.org/a.git\nref: "v1^2"`, /jobs\.build\.source\.ref: .*cannot contain "\^"$/],
    [`git: https://git.example.org/a.git\nref: feature.lock`, /jobs\.build\.source\.ref: .*cannot end with "\.lock"/],
    [`git: https://git.example.org/a.git\nref: main\ncommit: abc1234`, /^ci\.yml:7:15: jobs\.build\.source\.commit: invalid value "abc1234": expected a full commit sha \(40 or 64 hex digits/],
    [`git: https://git.example.org/a.git\nref: main\ncommit: ${"g".repeat(40)}`, /jobs\.build\.source\.commit: invalid value "g{40}": expected a full commit sha/],
    [`git: https://git.example.org/a.git\nref: main\ncommit: ${"1".repeat(40)}`, /jobs\.build\.source\.commit: expected a full commit sha \(40 or 64 hex digits; quote it if it is all digits\), got .* \(a number\)$/],
  ];
  for (const [source, re] of cases) {
    const issues = issuesOf(file(source));
    assert.ok(issues.some((i) => re.test(formatIssue(i))), `for:\n${source}\nexpected ${re}, got:\n${issues.map(formatIssue).join("\n")}`);
  }
  const shape = issuesOf(`jobs:\n  a:\n    source: https://git.example.org/a.git\n    steps: [{run: x}]\n`);
  assert.match(formatIssue(shape[0]!), /^ci\.yml:3:13: jobs\.a\.source: expected a git source: \{git: URL, ref\?: branch or tag \(default: the default branch\), commit\?: sha on that ref\}/);
});

void test("refProblem accepts the branch and tag names git accepts", () => {
  for (const ok of ["HEAD", "main", "v1.2.0", "release/2026-11", "feature/x_y", "a@b", "UPPER"]) assert.equal(refProblem(ok), null, ok);
  for (const bad of ["/x", "x/", "a//b", "x.", ".hidden", "a/.b", "a@{1}", "a:b", "a?b", "a*b", "a[b", "a\\b", "a~1", "@", "a\tb"]) assert.notEqual(refProblem(bad), null, bad);
});

void test("several problems of one source are reported at once, in line order", () => {
  const issues = issuesOf(file(`git: "https://u:p@git.example.org/a.git"\nref: a..b`, "network: none"));
  assert.deepEqual(issues.map((i) => `${i.line}:${i.field}`), ["5:jobs.build.source.git", "6:jobs.build.source.ref"]);
});
