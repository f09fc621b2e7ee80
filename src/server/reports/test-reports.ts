/**
 * Test reports of a job: each committed artifact whose rule declares `report: junit` is read
 * from the content store (at most `maxBytes`), parsed (junit-report.ts; a tar's `.xml` files
 * each) and summarised. Artifacts are immutable, so a summary is a function of the digest:
 * summaries are cached by it (bounded, least recently used first out), and nothing is stored.
 */
import type { Readable } from "node:stream";
import type { ArtifactRule, JobStatus } from "../../protocol/schemas.ts";
import type { ReportFormat, TestReport } from "../../protocol/test-report.ts";
import { parseJUnit, type JUnitLimits, type JUnitSummary } from "./junit-report.ts";
import { tarEntries } from "./tar-entries.ts";

/** The slice of the content store reports need. */
export interface ReportBlobs {
  open(sha256: string): Promise<Readable>;
}

export interface TestReportOptions extends JUnitLimits {
  /** Largest artifact read as a report; a bigger one is a notice. */
  maxBytes: number;
  /** Summaries kept in memory. */
  cacheEntries: number;
}

type Artifact = JobStatus["artifacts"][number];
const NOTICE_MAX_CHARS = 2000;

async function readAll(stream: Readable, max: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of stream) {
    const b = chunk as Buffer;
    n += b.length;
    if (n > max) {
      stream.destroy();
      throw new Error(`more than ${max} bytes`);
    }
    parts.push(b);
  }
  return Buffer.concat(parts);
}

export class TestReports {
  private readonly cache = new Map<string, Promise<JUnitSummary>>();

  constructor(private readonly blobs: ReportBlobs, private readonly opts: TestReportOptions) {}

  /** One report per committed artifact that `rules` declare as a report, in rule order. */
  async forArtifacts(rules: readonly ArtifactRule[], artifacts: readonly Artifact[]): Promise<TestReport[]> {
    const out: TestReport[] = [];
    for (const rule of rules) {
      if (rule.report === undefined) continue;
      const art = artifacts.find((a) => a.name === rule.name);
      if (!art) continue;
      const s = await this.summary(rule.report, art);
      out.push({ artifact: art.name, format: rule.report, ...s });
    }
    return out;
  }

  private summary(format: ReportFormat, art: Artifact): Promise<JUnitSummary> {
    const key = `${format}:${art.path === null ? "tar" : "file"}:${art.sha256}`;
    const hit = this.cache.get(key);
    if (hit) {
      this.cache.delete(key);
      this.cache.set(key, hit);
      return hit;
    }
    const p = this.load(art);
    this.cache.set(key, p);
    // A read that failed (store unreachable) is not a fact about the artifact: try again next time.
    void p.then((s) => (s.notice?.startsWith("could not read") ? this.cache.delete(key) : undefined));
    while (this.cache.size > this.opts.cacheEntries) this.cache.delete(this.cache.keys().next().value!);
    return p;
  }

  private async load(art: Artifact): Promise<JUnitSummary> {
    if (art.size > this.opts.maxBytes) {
      return { counts: null, failed: [], failedOmitted: 0, notice: `the report is ${art.size} bytes, more than the ${this.opts.maxBytes} read: not parsed` };
    }
    let bytes: Buffer;
    try {
      bytes = await readAll(await this.blobs.open(art.sha256), this.opts.maxBytes);
    } catch (err) {
      return { counts: null, failed: [], failedOmitted: 0, notice: `could not read the artifact: ${(err as Error).message}` };
    }
    if (art.path !== null) return parseJUnit(bytes.toString("utf8"), this.opts);
    let files;
    try {
      files = tarEntries(bytes).filter((e) => e.name.toLowerCase().endsWith(".xml"));
    } catch (err) {
      return { counts: null, failed: [], failedOmitted: 0, notice: `unreadable archive: ${(err as Error).message}` };
    }
    if (files.length === 0) return { counts: null, failed: [], failedOmitted: 0, notice: "the artifact holds no .xml file" };
    return merge(files.map((f) => ({ name: f.name, s: parseJUnit(f.data.toString("utf8"), this.opts) })), this.opts.failedMax);
  }
}

/** Sums the reports of several files; notices name their file. */
function merge(parts: Array<{ name: string; s: JUnitSummary }>, failedMax: number): JUnitSummary {
  const read = parts.filter((p) => p.s.counts !== null);
  const counts = read.length === 0 ? null : read.reduce((c, p) => {
    const x = p.s.counts!;
    return { tests: c.tests + x.tests, passed: c.passed + x.passed, failures: c.failures + x.failures, errors: c.errors + x.errors, skipped: c.skipped + x.skipped };
  }, { tests: 0, passed: 0, failures: 0, errors: 0, skipped: 0 });
  const all = parts.flatMap((p) => p.s.failed);
  const failed = all.slice(0, failedMax);
  const failedOmitted = all.length - failed.length + parts.reduce((n, p) => n + p.s.failedOmitted, 0);
  const notices = parts.filter((p) => p.s.notice !== null).map((p) => `${p.name}: ${p.s.notice}`);
  const text = notices.join("; ");
  return { counts, failed, failedOmitted, notice: notices.length === 0 ? null : text.length > NOTICE_MAX_CHARS ? `${text.slice(0, NOTICE_MAX_CHARS - 1)}…` : text };
}
