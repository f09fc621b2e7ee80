/**
 * Test reports as the job API shows them (`GET /v1/jobs/:id` → `testReports`): the summary the
 * server parsed from an artifact declared with `report: junit` (docs/job-file.md). A report that
 * could not be read is a notice, never a failed job.
 */

/** Report formats an artifact rule may declare. */
export const REPORT_FORMATS = ["junit"] as const;
export type ReportFormat = (typeof REPORT_FORMATS)[number];

export interface FailedTestCase {
  /** The suite (testsuite name) and class the case belongs to, when the report names them. */
  suite: string | null;
  classname: string | null;
  name: string;
  /** `failure`: an assertion failed; `error`: the test could not run to its end. */
  kind: "failure" | "error";
  /** The `message` attribute, else the first line of the element's text; cut to a bounded length. */
  message: string;
  /** The `type` attribute (e.g. an exception class), when given. */
  type: string | null;
  /** The element's text (stack trace or details), cut to a bounded length. */
  details: string;
}

export interface TestReportCounts {
  tests: number;
  passed: number;
  failures: number;
  errors: number;
  skipped: number;
}

export interface TestReport {
  /** The artifact the report came from. */
  artifact: string;
  format: ReportFormat;
  /** Null when the report could not be read; `notice` says why. */
  counts: TestReportCounts | null;
  /** Failed cases (failures and errors), in report order, at most a bounded number. */
  failed: FailedTestCase[];
  /** Failed cases left out of `failed` by the bound. */
  failedOmitted: number;
  /** Why the report is missing or partial (malformed XML, too large, no test cases), else null. */
  notice: string | null;
}
