/**
 * JUnit XML → counts and failed cases. The text is untrusted: a DOCTYPE (and so any entity
 * definition, the way to expansion bombs and external entities) is refused before parsing,
 * fast-xml-parser bounds nesting, the walk is iterative, and every string kept is cut to a
 * bound and stripped of control characters. Anything unreadable becomes a notice.
 */
import { XMLParser, XMLValidator } from "fast-xml-parser";
import type { FailedTestCase, TestReportCounts } from "../../protocol/test-report.ts";

export interface JUnitLimits {
  /** Failed cases kept per report (the counts stay exact). */
  failedMax: number;
  /** Characters kept of a failure's message, and of its details. */
  messageMaxChars: number;
  detailsMaxChars: number;
}

export interface JUnitSummary {
  counts: TestReportCounts | null;
  failed: FailedTestCase[];
  failedOmitted: number;
  notice: string | null;
}

/** Deeper than any real report (suites in suites); beyond it the parser refuses the file. */
const MAX_NESTED_TAGS = 64;
const ARRAYS = new Set(["testsuite", "testcase", "failure", "error", "skipped"]);

type XmlNode = Record<string, unknown>;

const notice = (text: string): JUnitSummary => ({ counts: null, failed: [], failedOmitted: 0, notice: text });

/** Removes escapes and control characters (keeps newlines and tabs) and cuts to `max` characters. */
export function cleanText(s: string, max: number): string {
  // eslint-disable-next-line no-control-regex
  const clean = s.replace(/\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)?|[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, "");
  return clean.length > max ? `${clean.slice(0, Math.max(0, max - 1))}…` : clean;
}

function attr(node: unknown, name: string): string | null {
  if (node === null || typeof node !== "object") return null;
  const v = (node as XmlNode)[`@_${name}`];
  return typeof v === "string" ? v : null;
}

function text(node: unknown): string {
  if (typeof node === "string") return node;
  if (node !== null && typeof node === "object") {
    const t = (node as XmlNode)["#text"];
    return typeof t === "string" ? t : "";
  }
  return "";
}

function list(node: unknown, key: string): unknown[] {
  if (node === null || typeof node !== "object") return [];
  const v = (node as XmlNode)[key];
  return Array.isArray(v) ? (v as unknown[]) : v === undefined ? [] : [v];
}

/** Parses one JUnit XML document (a `<testsuites>` or `<testsuite>` root). */
export function parseJUnit(xml: string, limits: JUnitLimits): JUnitSummary {
  const body = xml.charCodeAt(0) === 0xfeff ? xml.slice(1) : xml;
  if (/<!DOCTYPE/i.test(body) || /<!ENTITY/i.test(body)) return notice("the report has a DOCTYPE or entity declaration, which JUnit reports never need: refused");
  const valid = XMLValidator.validate(body);
  if (valid !== true) {
    const where = Number.isInteger(valid.err.col) ? `line ${valid.err.line}, column ${valid.err.col}` : `line ${valid.err.line}`;
    return notice(`malformed XML at ${where}: ${cleanText(valid.err.msg, 200)}`);
  }
  let doc: XmlNode;
  try {
    const parser = new XMLParser({
      ignoreAttributes: false, attributeNamePrefix: "@_", textNodeName: "#text", parseTagValue: false, parseAttributeValue: false,
      trimValues: true, htmlEntities: false, processEntities: true, maxNestedTags: MAX_NESTED_TAGS,
      isArray: (name) => ARRAYS.has(name),
    });
    doc = parser.parse(body) as XmlNode;
  } catch (err) {
    return notice(`unreadable XML: ${cleanText((err as Error).message, 200)}`);
  }
  const roots = [...list(doc, "testsuites"), ...list(doc, "testsuite")];
  if (roots.length === 0) {
    const names = Object.keys(doc).filter((k) => !k.startsWith("?") && !k.startsWith("#"));
    return notice(`not a JUnit report: expected a <testsuites> or <testsuite> root element, found ${names.length ? `<${cleanText(names[0] ?? "", 64)}>` : "none"}`);
  }
  return summarize(roots, limits);
}

/** Walks suites (iteratively; suites may nest) and counts their cases. */
function summarize(roots: unknown[], limits: JUnitLimits): JUnitSummary {
  const counts: TestReportCounts = { tests: 0, passed: 0, failures: 0, errors: 0, skipped: 0 };
  const failed: FailedTestCase[] = [];
  let failedOmitted = 0;
  const stack: Array<{ node: unknown; suite: string | null }> = roots.map((node) => ({ node, suite: attr(node, "name") })).reverse();
  while (stack.length > 0) {
    const { node, suite } = stack.pop()!;
    for (const tc of list(node, "testcase")) {
      counts.tests++;
      const failure = list(tc, "failure")[0];
      const error = list(tc, "error")[0];
      const bad = failure ?? error;
      if (bad !== undefined) {
        if (failure !== undefined) counts.failures++;
        else counts.errors++;
        if (failed.length >= limits.failedMax) {
          failedOmitted++;
          continue;
        }
        const details = text(bad).trim();
        failed.push({
          suite: suite === null ? null : cleanText(suite, 256),
          classname: ((c) => (c === null ? null : cleanText(c, 256)))(attr(tc, "classname")),
          name: cleanText(attr(tc, "name") ?? "(unnamed)", 512),
          kind: failure !== undefined ? "failure" : "error",
          message: cleanText(attr(bad, "message") ?? details.split("\n")[0] ?? "", limits.messageMaxChars),
          type: ((t) => (t === null ? null : cleanText(t, 256)))(attr(bad, "type")),
          details: cleanText(details, limits.detailsMaxChars),
        });
      } else if (list(tc, "skipped").length > 0) {
        counts.skipped++;
      } else {
        counts.passed++;
      }
    }
    const children = list(node, "testsuite");
    for (let i = children.length - 1; i >= 0; i--) stack.push({ node: children[i], suite: attr(children[i], "name") ?? suite });
  }
  return { counts, failed, failedOmitted, notice: counts.tests === 0 ? "the report has no test cases" : null };
}
