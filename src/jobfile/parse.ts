/**
 * Job files: YAML text → validated jobs (the protocol's SubmittedJobSpec plus secret names),
 * or a list of issues, each with `file:line:column`, the field, and what was expected.
 */
import { LineCounter, parseDocument } from "yaml";
import type { ValidateFunction } from "ajv";
import { DeltaError } from "../base/errors.ts";
import type { SubmittedJobSpec } from "../protocol/schemas.ts";
import { compileJobFileValidator, explainSchemaErrors } from "./schema-errors.ts";
import { findKey, findNode, formatPath, positionOf, type PathSegment } from "./locate.ts";
import { jobToSpec, type RawJob, type ConvertIssue } from "./to-spec.ts";

export interface JobFileIssue {
  file: string;
  line: number;
  column: number;
  /** The field, e.g. `jobs.build.steps[0].rnu`. */
  field: string;
  message: string;
}

export interface ParsedJob {
  name: string;
  spec: SubmittedJobSpec;
  /** Secret names the job asks for; values are supplied at submit time. */
  secrets: string[];
}

export type ParseResult = { ok: true; jobs: ParsedJob[] } | { ok: false; issues: JobFileIssue[] };

export function formatIssue(i: JobFileIssue): string {
  return `${i.file}:${i.line}:${i.column}: ${i.field}: ${i.message}`;
}

/** Parses job files; compile the schema once per parser. */
export class JobFileParser {
  private readonly validate: ValidateFunction = compileJobFileValidator();

  parse(text: string, file: string): ParseResult {
    const lines = new LineCounter();
    const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true, strict: true });
    const issues: JobFileIssue[] = [];
    for (const err of doc.errors) {
      const { line, col } = lines.linePos(err.pos[0]);
      issues.push({ file, line, column: col, field: "(yaml)", message: err.message.split("\n")[0] ?? err.message });
    }
    if (issues.length > 0) return { ok: false, issues };
    let data: unknown;
    try {
      data = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      return { ok: false, issues: [{ file, line: 1, column: 1, field: "(yaml)", message: (err as Error).message }] };
    }
    if (data === null || data === undefined) {
      return { ok: false, issues: [{ file, line: 1, column: 1, field: "(file)", message: `the file is empty: expected a map with "jobs:"` }] };
    }
    const at = (path: readonly PathSegment[], key: string | null, message: string): JobFileIssue => {
      const node = key !== null ? findKey(doc, path.slice(0, -1), key) : findNode(doc, path).node;
      return { file, ...positionOf(node, lines), field: formatPath(path), message };
    };
    if (!this.validate(data)) {
      for (const i of explainSchemaErrors(this.validate.errors ?? [], data)) issues.push(at(i.path, i.key, i.message));
      return { ok: false, issues: sortIssues(issues) };
    }
    const jobs: ParsedJob[] = [];
    const rawJobs = (data as { jobs: Record<string, RawJob> }).jobs;
    for (const [name, raw] of Object.entries(rawJobs)) {
      const converted = jobToSpec(name, raw);
      if (converted.issues.length > 0) {
        issues.push(...converted.issues.map((c: ConvertIssue) => at(["jobs", name, ...c.path], null, c.message)));
      } else if (converted.job) {
        jobs.push(converted.job);
      }
    }
    if (issues.length > 0) return { ok: false, issues: sortIssues(issues) };
    return { ok: true, jobs };
  }

  /** Parses, or throws a DeltaError E_INVALID whose message lists every issue. */
  parseOrThrow(text: string, file: string): ParsedJob[] {
    const r = this.parse(text, file);
    if (!r.ok) throw new DeltaError("E_INVALID", r.issues.map(formatIssue).join("\n"), { details: { issues: r.issues } });
    return r.jobs;
  }
}

function sortIssues(issues: JobFileIssue[]): JobFileIssue[] {
  return issues.sort((a, b) => a.line - b.line || a.column - b.column);
}
