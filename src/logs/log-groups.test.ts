import { test } from "node:test";
import assert from "node:assert/strict";
import { GroupTracker, parseGroupMarker } from "./log-groups.ts";

void test("group markers of GitHub, GitLab and Buildkite", () => {
  assert.deepEqual(parseGroupMarker("::group::Install deps"), { kind: "start", style: "github", title: "Install deps", folded: true, id: null });
  assert.deepEqual(parseGroupMarker("::endgroup::"), { kind: "end", style: "github", id: null });
  assert.deepEqual(parseGroupMarker("\x1b[0Ksection_start:1560896352:my_section[collapsed=true]\r\x1b[0KHeader"), { kind: "start", style: "gitlab", title: "Header", folded: true, id: "my_section" });
  assert.deepEqual(parseGroupMarker("section_start:1560896352:other\r\x1b[0KOther"), { kind: "start", style: "gitlab", title: "Other", folded: false, id: "other" });
  assert.deepEqual(parseGroupMarker("\x1b[0Ksection_end:1560896353:my_section\r\x1b[0K"), { kind: "end", style: "gitlab", id: "my_section" });
  assert.deepEqual(parseGroupMarker("--- :npm: build"), { kind: "start", style: "buildkite", title: ":npm: build", folded: true, id: null });
  assert.deepEqual(parseGroupMarker("+++ tests"), { kind: "start", style: "buildkite", title: "tests", folded: false, id: null });
  assert.equal(parseGroupMarker("---"), null);
  assert.equal(parseGroupMarker("echo ::group::x"), null);
  assert.equal(parseGroupMarker(`::group::${"x".repeat(2000)}`), null);
});

void test("the tracker: flat groups; a GitLab end closes only its own section; a step end closes the group", () => {
  const t = new GroupTracker();
  assert.deepEqual(t.feed("plain"), null);
  assert.equal(t.feed("::endgroup::"), null, "an end with nothing open is text");
  const a = t.feed("section_start:1:a\rA");
  assert.ok(a && "opened" in a && !a.closedPrevious);
  assert.equal(t.feed("section_end:2:b"), null);
  assert.deepEqual(t.feed("section_end:2:a"), { closed: true });
  const b = t.feed("::group::b");
  assert.ok(b && "opened" in b);
  const c = t.feed("--- c");
  assert.ok(c && "opened" in c && c.closedPrevious);
  assert.equal(t.reset(), true);
  assert.equal(t.isOpen, false);
});
