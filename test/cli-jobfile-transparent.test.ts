/**
 * `network: {allow, transparent}` in a job file: the spec it becomes, the errors with file:line:column,
 * and the label that keeps a runner which cannot apply it (an older one, a process runner) from leasing it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Value } from "@sinclair/typebox/value";
import { JobFileParser, formatIssue } from "../src/jobfile/parse.ts";
import { SubmittedJobSpec, TRANSPARENT_EGRESS_LABEL } from "../src/protocol/schemas.ts";
import { mismatch, requirementsOf } from "../src/server/engine/matching.ts";
import { probeCapabilities } from "../src/runner/capabilities.ts";

const parser = new JobFileParser();

function specOf(network: string) {
  const r = parser.parse(`jobs:\n  a:\n    runs-on: linux\n    network: ${network}\n    steps: [{run: x}]\n`, "ci.yml");
  assert.ok(r.ok, r.ok ? "" : r.issues.map(formatIssue).join("\n"));
  const spec = r.jobs[0]!.spec;
  assert.ok(Value.Check(SubmittedJobSpec, spec), "a valid SubmittedJobSpec");
  return spec;
}

function issues(network: string): string[] {
  const r = parser.parse(`jobs:\n  a:\n    network: ${network}\n    steps: [{run: x}]\n`, "ci.yml");
  assert.equal(r.ok, false, "expected the file to be rejected");
  return r.ok ? [] : r.issues.map(formatIssue);
}

void test("transparent: true reaches the spec's allowlist; absent or false leaves the spec as before", () => {
  assert.deepEqual(specOf("{allow: [git.example.org:22], transparent: true}").network, { egress: "allowlist", allow: ["git.example.org:22"], transparent: true });
  assert.deepEqual(specOf("{allow: [git.example.org:22], transparent: false}").network, { egress: "allowlist", allow: ["git.example.org:22"] });
  assert.deepEqual(specOf("{allow: [git.example.org:22]}").network, { egress: "allowlist", allow: ["git.example.org:22"] });
});

void test("a wrong transparent says where and what was expected", () => {
  assert.deepEqual(issues("{allow: [x.org], transparent: sometimes}"), [`ci.yml:3:44: jobs.a.network.transparent: expected true or false: also let clients that ignore HTTP(S)_PROXY (ssh, raw TCP) out through the same allowlist (oci sandbox; default false), got "sometimes"`]);
  assert.deepEqual(issues("{transparent: true}"), [`ci.yml:3:14: jobs.a.network: missing required key "allow"`]);
  assert.deepEqual(issues("{allow: [x.org], transparnt: true}"), [`ci.yml:3:31: jobs.a.network.transparnt: unknown key "transparnt" — did you mean "transparent"?`]);
});

void test("a transparent job needs a runner that advertises the label: oci runners do, older and process runners never lease it", async () => {
  const spec = specOf("{allow: [git.example.org:22], transparent: true}");
  const req = requirementsOf(spec);
  assert.deepEqual(req.labels, [TRANSPARENT_EGRESS_LABEL, "linux"].sort());
  assert.deepEqual(requirementsOf(specOf("{allow: [git.example.org:22]}")).labels, ["linux"]);
  const toolchains = Promise.resolve({});
  const oci = await probeCapabilities({ labels: ["linux"], isolation: "oci", workDir: "/", toolchains });
  const processRunner = await probeCapabilities({ labels: ["linux"], isolation: "process", workDir: "/", toolchains });
  assert.ok(oci.labels.includes(TRANSPARENT_EGRESS_LABEL));
  assert.equal(mismatch(req, oci), null);
  assert.equal(mismatch(req, processRunner), `needs labels [${TRANSPARENT_EGRESS_LABEL}]`);
  // a runner that predates the feature registers its own labels only
  assert.equal(mismatch(req, { ...oci, labels: ["linux"] }), `needs labels [${TRANSPARENT_EGRESS_LABEL}]`);
});
