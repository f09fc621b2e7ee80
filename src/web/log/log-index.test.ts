import { test } from "node:test";
import assert from "node:assert/strict";
import { formatMarker } from "../../logs/step-markers.ts";
import { ansiSpans, plainText } from "./ansi.ts";
import { LineKind, LogIndex } from "./log-index.ts";

const N = "0123456789abcdef";
const enc = new TextEncoder();
const m = (kind: Parameters<typeof formatMarker>[1], data: Record<string, unknown>, nonce = N) => formatMarker(nonce, kind, data);

function logOf(parts: string[]): string {
  return [m("log-start", { version: 1, jobId: "j", runId: "r", attempt: 1, job: "x" }), ...parts].join("");
}

function index(text: string, pieces = 1): LogIndex {
  const ix = new LogIndex();
  const b = enc.encode(text);
  const size = Math.ceil(b.length / pieces);
  for (let i = 0; i < b.length; i += size) ix.append(b.subarray(i, i + size));
  return ix;
}

const rows = (ix: LogIndex) => Array.from({ length: ix.rowCount }, (_, r) => ix.lineText(ix.lineOfRow(r)).text);

const LOG = logOf([
  m("step-start", { index: 0, name: "build" }),
  "compiling\n",
  "::group::deps\n", "dep a\n", "dep b\n", "::endgroup::\n",
  "after group\n",
  `##[deltaci ffffffffffffffff] step-end {"index":0,"name":"build","exitCode":0,"signal":null,"durationMs":1,"result":"succeeded"}\n`,
  m("step-end", { index: 0, name: "build", exitCode: 0, signal: null, durationMs: 5, result: "succeeded" }),
  m("step-start", { index: 1, name: "test" }),
  "--- tests\n", "ok 1\n", "+++ summary\n", "1 passed\n",
  m("step-end", { index: 1, name: "test", exitCode: 1, signal: null, durationMs: 7, result: "failed" }),
  "::group::outside\n",
  m("job-end", { result: "failed", exitCode: 1, failure: null }),
]);

void test("steps come from nonce markers only; groups fold inside steps; any chunking gives the same index", () => {
  for (const pieces of [1, 7, 301]) {
    const ix = index(LOG, pieces);
    const steps = ix.steps();
    assert.deepEqual(steps.map((s) => [s.title, s.result, s.exitCode, s.durationMs]), [["build", "succeeded", 0, 5], ["test", "failed", 1, 7]]);
    const groups = ix.sections.filter((s) => s.kind === "group").map((s) => [s.title, s.folded]);
    assert.deepEqual(groups, [["deps", true], ["tests", true], ["summary", false]]);
    // Folded groups hide their lines; the forged step-end with another nonce is plain text inside step 0.
    const r = rows(ix);
    assert.ok(!r.includes("dep a") && !r.includes("ok 1"), r.join("|"));
    assert.ok(r.includes("1 passed") && r.includes("after group") && r.includes("::group::outside"));
    assert.ok(r.some((t) => t.startsWith("##[deltaci ffffffffffffffff] step-end")));
    assert.equal(ix.sections.filter((s) => s.kind === "step").length, 2);
  }
});

void test("fold, unfold and reveal a line; search finds it case-insensitively", () => {
  const ix = index(LOG);
  const build = ix.steps()[0];
  assert.ok(build);
  ix.fold(build, true);
  assert.ok(!rows(ix).includes("compiling"));
  assert.ok(ix.rowOfLine(build.line) >= 0, "a folded step keeps its header row");
  const hits = ix.search("DEP B");
  assert.equal(hits.length, 1);
  const line = hits[0] ?? -1;
  assert.equal(ix.lineText(line).text, "dep b");
  const row = ix.reveal(line);
  assert.equal(ix.lineOfRow(row), line);
  assert.ok(rows(ix).includes("compiling") && rows(ix).includes("dep a"));
});

void test("a log without a log-start line has no steps; a partial last line shows after finish", () => {
  const ix = index(`${m("step-start", { index: 0, name: "x" })}plain\nno newline`);
  assert.equal(ix.steps().length, 0);
  assert.equal(ix.rowCount, 2);
  ix.finish();
  assert.equal(ix.lineText(2).text, "no newline");
  assert.equal(ix.kindOf(0), LineKind.Text);
});

void test("GitLab sections and collapsed option", () => {
  const ix = index(logOf([
    m("step-start", { index: 0, name: "s" }),
    "\x1b[0Ksection_start:1700000000:prep[collapsed=true]\r\x1b[0KPreparing\n", "inside\n", "\x1b[0Ksection_end:1700000001:prep\r\x1b[0K\n",
    "section_start:1700000002:run\r\x1b[0KRunning\n", "visible\n", "section_end:1700000003:run\r\x1b[0K\n",
    m("step-end", { index: 0, name: "s", exitCode: 0, signal: null, durationMs: 1, result: "succeeded" }),
  ]));
  assert.deepEqual(ix.sections.filter((s) => s.kind === "group").map((s) => [s.title, s.folded]), [["Preparing", true], ["Running", false]]);
  assert.ok(!rows(ix).includes("inside") && rows(ix).includes("visible"));
});

void test("ANSI: colours become classes, other escapes vanish, markup stays text", () => {
  const spans = ansiSpans("\x1b[1;31mred\x1b[0m plain \x1b]8;;https://evil.example\x07link\x1b]8;;\x07 \x1b]0;title\x07<script>x</script>\x1b[38;5;196mc\x1b[2K");
  assert.deepEqual(spans.map((s) => [s.text, s.cls]), [["red", "f1 b"], [" plain ", ""], ["link", ""], [" ", ""], ["<script>x</script>", ""], ["c", ""]]);
  assert.equal(spans[5]?.fg, "rgb(255,0,0)");
  assert.equal(plainText("progress 10%\rprogress 100%"), "progress 100%");
  assert.equal(plainText("a\x07b\x00c\x9b31md"), "abcd");
});
