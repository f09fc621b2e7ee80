import { test } from "node:test";
import assert from "node:assert/strict";
import { parseJUnit } from "./junit-report.ts";

const limits = { failedMax: 3, messageMaxChars: 100, detailsMaxChars: 200 };

void test("counts passed, failed, errored and skipped cases across nested suites, with failure messages", () => {
  const xml = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="all" tests="99">
  <testsuite name="math" tests="3">
    <testcase classname="math.Add" name="adds"/>
    <testcase classname="math.Add" name="overflows"><failure message="expected 2 &lt; 1" type="AssertionError">at add (math.js:3)
at test (math.js:9)</failure></testcase>
    <testcase classname="math.Div" name="by zero"><error type="TypeError">boom &amp; bust
second line</error></testcase>
    <testsuite name="inner">
      <testcase name="todo"><skipped message="later"/></testcase>
      <testcase name="plain"></testcase>
    </testsuite>
  </testsuite>
  <testcase name="top level"><failure/></testcase>
</testsuites>`;
  const r = parseJUnit(xml, limits);
  assert.equal(r.notice, null);
  assert.deepEqual(r.counts, { tests: 6, passed: 2, failures: 2, errors: 1, skipped: 1 });
  assert.deepEqual(r.failed.map((f) => [f.suite, f.classname, f.name, f.kind, f.message, f.type]), [
    ["all", null, "top level", "failure", "", null],
    ["math", "math.Add", "overflows", "failure", "expected 2 < 1", "AssertionError"],
    ["math", "math.Div", "by zero", "error", "boom & bust", "TypeError"],
  ]);
  assert.equal(r.failed[1]?.details, "at add (math.js:3)\nat test (math.js:9)");
});

void test("a single <testsuite> root works; failed cases past the bound are counted, and strings are cut and cleaned", () => {
  const cases = Array.from({ length: 5 }, (_, i) => `<testcase name="t${i}"><failure message="${"x".repeat(300)}">\u001b[31mred\u001b[0m\u001b]0;title\u0007 text</failure></testcase>`);
  const r = parseJUnit(`<testsuite name="s">${cases.join("")}</testsuite>`, limits);
  assert.deepEqual(r.counts, { tests: 5, passed: 0, failures: 5, errors: 0, skipped: 0 });
  assert.equal(r.failed.length, 3);
  assert.equal(r.failedOmitted, 2);
  assert.equal(r.failed[0]?.message.length, 100);
  assert.ok(r.failed[0]?.message.endsWith("…"));
  assert.equal(r.failed[0]?.details, "red text");
});

void test("hostile or malformed XML is a notice, never a throw", () => {
  const bomb = `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><testsuite><testcase name="&lol3;"/></testsuite>`;
  assert.match(parseJUnit(bomb, limits).notice ?? "", /DOCTYPE or entity declaration.*refused/);
  const xxe = `<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><testsuite><testcase name="&x;"/></testsuite>`;
  assert.equal(parseJUnit(xxe, limits).counts, null);
  const broken = parseJUnit(`<testsuite>\n<testcase name="a">\n</testsuite>`, limits);
  assert.equal(broken.counts, null);
  assert.match(broken.notice ?? "", /^malformed XML at line \d+(, column \d+)?: /);
  assert.match(parseJUnit(`<html><body>hi</body></html>`, limits).notice ?? "", /not a JUnit report: .*found <html>/);
  assert.match(parseJUnit("", limits).notice ?? "", /malformed|not a JUnit report/);
  const deep = `<testsuite>${"<a>".repeat(5000)}${"</a>".repeat(5000)}</testsuite>`;
  assert.equal(parseJUnit(deep, limits).counts, null);
  assert.deepEqual(parseJUnit(`<testsuites/>`, limits), { counts: { tests: 0, passed: 0, failures: 0, errors: 0, skipped: 0 }, failed: [], failedOmitted: 0, notice: "the report has no test cases" });
});
