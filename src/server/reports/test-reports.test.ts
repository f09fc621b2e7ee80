import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { collectFiles } from "../../artifacts/collect.ts";
import { packTar } from "../../artifacts/tar-pack.ts";
import { TestReports } from "./test-reports.ts";

const opts = { maxBytes: 64 * 1024, cacheEntries: 2, failedMax: 10, messageMaxChars: 200, detailsMaxChars: 200 };
const ok = `<testsuite name="a"><testcase name="p"/><testcase name="f"><failure message="nope"/></testcase></testsuite>`;

function store(blobs: Map<string, Buffer>) {
  let opened = 0;
  return {
    opened: () => opened,
    async open(sha: string) {
      opened++;
      const b = blobs.get(sha);
      if (!b) throw new Error(`no blob ${sha}`);
      return Readable.from([b]);
    },
  };
}
const art = (name: string, sha: string, size: number, path: string | null) => ({ artifactId: `art_${name}`, name, size, sha256: sha, mediaType: "application/octet-stream", path });
const rule = (name: string, report?: "junit") => ({ name, paths: ["x"], when: "always" as const, ...(report ? { report } : {}) });

void test("a tar of several reports is summed; a bad file in it is a notice naming it; results are cached by digest", async () => {
  const dir = mkdtempSync(join(tmpdir(), "deltaci-reports-"));
  try {
    mkdirSync(join(dir, "reports", "deep"), { recursive: true });
    writeFileSync(join(dir, "reports", "one.xml"), ok);
    writeFileSync(join(dir, "reports", "deep", `${"long-name-".repeat(12)}.xml`), ok.replace("nope", "again"));
    writeFileSync(join(dir, "reports", "bad.xml"), "<testsuite><testcase>");
    writeFileSync(join(dir, "reports", "notes.txt"), "ignored");
    const files = (await collectFiles(dir, ["reports/**"])).files;
    const packed = await packTar(dir, files, join(dir, "out.tar"));
    const s = store(new Map([["t".repeat(64), readFileSync(join(dir, "out.tar"))], ["f".repeat(64), Buffer.from(ok)]]));
    const reports = new TestReports(s, opts);
    const arts = [art("junit", "t".repeat(64), packed.size, null), art("single", "f".repeat(64), ok.length, "r.xml"), art("other", "f".repeat(64), ok.length, "r.xml")];
    const rules = [rule("junit", "junit"), rule("single", "junit"), rule("other"), rule("missing", "junit")];
    const [tar, single, ...rest] = await reports.forArtifacts(rules, arts);
    assert.equal(rest.length, 0, "only declared reports that were uploaded");
    assert.deepEqual(tar?.counts, { tests: 4, passed: 2, failures: 2, errors: 0, skipped: 0 });
    assert.deepEqual(tar?.failed.map((f) => f.message).sort(), ["again", "nope"]);
    assert.match(tar?.notice ?? "", /^reports\/bad\.xml: malformed XML/);
    assert.deepEqual(single?.counts, { tests: 2, passed: 1, failures: 1, errors: 0, skipped: 0 });
    assert.equal(single?.notice, null);
    assert.equal(s.opened(), 2);
    await reports.forArtifacts(rules, arts);
    assert.equal(s.opened(), 2, "summaries are cached by digest");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

void test("a report over the size bound or unreadable from the store is a notice", async () => {
  const s = store(new Map());
  const reports = new TestReports(s, opts);
  const [big, gone] = await reports.forArtifacts([rule("big", "junit"), rule("gone", "junit")], [art("big", "a".repeat(64), opts.maxBytes + 1, "b.xml"), art("gone", "b".repeat(64), 10, "g.xml")]);
  assert.match(big?.notice ?? "", /more than the 65536 read: not parsed/);
  assert.equal(big?.counts, null);
  assert.match(gone?.notice ?? "", /^could not read the artifact/);
  assert.equal(s.opened(), 1);
});
