import { test } from "node:test";
import assert from "node:assert/strict";
import { formatMarker, type MarkerKind } from "../logs/step-markers.ts";
import { LogPrinter } from "./log-printer.ts";
import { makeStyle } from "./style.ts";

void test("log groups become headers with indented lines, only inside steps; they cannot end a step", () => {
  let out = "";
  const p = new LogPrinter({ write: (s) => (out += s), style: makeStyle(false), prefix: "" });
  const m = (kind: MarkerKind, o: Record<string, unknown>) => formatMarker("0123456789abcdef", kind, o);
  p.push(Buffer.from([
    m("log-start", { version: 1 }).trimEnd(), "::group::outside", m("step-start", { index: 0, name: "build" }).trimEnd(),
    "::group::deps", "a", "::endgroup::", "b",
    "section_start:1:s1\r\x1b[0KSection one", "c", "section_end:2:s1\r\x1b[0K",
    "+++ tests", "d", m("notice", { message: "hi" }).trimEnd(), "e",
    m("step-end", { index: 0, name: "build", exitCode: 0, signal: null, durationMs: 5, result: "succeeded" }).trimEnd(),
    "--- after", "",
  ].join("\n")));
  p.end();
  assert.equal(out, [
    "::group::outside", "▶ build", "▸ deps", "  a", "b", "▸ Section one", "  c", "▸ tests", "  d", "! hi", "  e", "✓ build (5ms)", "--- after", "",
  ].join("\n"));
  assert.deepEqual(p.steps.map((s) => s.name), ["build"]);
});

void test("with fold, folded groups show a header and a line count; open ones show their lines; a failing step shows what its open group hid", () => {
  let out = "";
  const p = new LogPrinter({ write: (s) => (out += s), style: makeStyle(false), prefix: "", fold: true, foldTailBytes: 6 });
  const m = (kind: MarkerKind, o: Record<string, unknown>) => formatMarker("0123456789abcdef", kind, o);
  p.push(Buffer.from([
    m("log-start", { version: 1 }).trimEnd(), m("step-start", { index: 0, name: "build" }).trimEnd(),
    "::group::deps", "a", "b", "::endgroup::", "after",
    "section_start:1:s1\r\x1b[0KOpen section", "c", "section_end:1:s1\r\x1b[0K",
    "section_start:1:s2[collapsed=true]\r\x1b[0KClosed section", "d", "+++ tests", "e",
    "--- empty", "~~~ one", "f",
    m("step-end", { index: 0, name: "build", exitCode: 0, signal: null, durationMs: 5, result: "succeeded" }).trimEnd(),
    m("step-start", { index: 1, name: "test" }).trimEnd(),
    "::group::run", "t1", "t2", "t3", "t4",
    m("step-end", { index: 1, name: "test", exitCode: 1, signal: null, durationMs: 5, result: "failed" }).trimEnd(),
    "",
  ].join("\n")));
  p.end();
  assert.equal(out, [
    "▶ build", "▸ deps", "  (2 lines folded)", "after", "▾ Open section", "  c",
    "▸ Closed section", "  (1 line folded)", "▾ tests", "  e", "▸ empty", "▸ one", "  (1 line folded)", "✓ build (5ms)",
    "▶ test", "▸ run", "  (2 earlier lines not kept; `deltaci logs --no-fold` prints all)", "  t3", "  t4", "✗ exit 1 test (5ms)", "",
  ].join("\n"));
});
