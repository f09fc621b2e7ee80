/** Text views of job status for people (the --json views are the API's own objects). */
import { formatDurationMs } from "../../base/units.ts";
import type { JobStatus } from "../../protocol/schemas.ts";
import type { TestReport } from "../../protocol/test-report.ts";
import type { Style } from "../style.ts";

export function jobDurationMs(st: Pick<JobStatus, "createdAt" | "finishedAt">, now: number): number {
  const start = Date.parse(st.createdAt);
  const end = st.finishedAt ? Date.parse(st.finishedAt) : now;
  return Number.isFinite(start) && Number.isFinite(end) ? Math.max(0, end - start) : 0;
}

export function formatJobTable(jobs: JobStatus[], now: number): string {
  if (jobs.length === 0) return "no jobs";
  const rows = [["JOB ID", "NAME", "STATE", "CREATED", "DURATION", "FAILURE"]];
  for (const j of jobs) {
    rows.push([j.jobId, j.name, j.state, j.createdAt, formatDurationMs(jobDurationMs(j, now)), j.failure?.reason ?? ""]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ").trimEnd()).join("\n");
}

export function stateColour(style: Style, state: string): string {
  if (state === "succeeded") return style.green(state);
  if (state === "failed" || state === "errored") return style.red(state);
  if (state === "canceled" || state === "canceling") return style.yellow(state);
  return style.cyan(state);
}

export function formatStatus(st: JobStatus, style: Style): string {
  const lines = [
    `${style.bold(st.name)}  ${st.jobId}  ${stateColour(style, st.state)}${st.fork ? "  (fork)" : ""}`,
    `  created ${st.createdAt}${st.finishedAt ? `, finished ${st.finishedAt} (${formatDurationMs(jobDurationMs(st, Date.now()))})` : ""}`,
  ];
  if (st.unschedulable) lines.push(`  ${style.yellow(`unschedulable: ${st.unschedulable}`)}`);
  if (st.failure) lines.push(`  ${style.red(`failure: ${st.failure.reason}`)}${st.failure.step !== null ? ` in step ${st.failure.step + 1}` : ""}: ${st.failure.message}`);
  if (st.attempts.length > 0) {
    lines.push("  attempts:");
    for (const a of st.attempts) lines.push(`    #${a.attempt} ${a.state}${a.reason ? ` (${a.reason})` : ""}${a.runnerId ? ` on ${a.runnerId}` : ""}`);
  }
  if (st.steps.length > 0) {
    lines.push("  steps:");
    st.steps.forEach((s, i) => {
      const took = s.startedAt && s.finishedAt ? ` ${formatDurationMs(Date.parse(s.finishedAt) - Date.parse(s.startedAt))}` : "";
      const how = s.exitCode === 0 ? style.green("ok") : s.exitCode === null && !s.signal ? style.dim("skipped") : style.red(`exit ${s.exitCode ?? s.signal}`);
      lines.push(`    ${i + 1}. ${s.name}  ${how}${took}`);
    });
  }
  if (st.artifacts.length > 0) {
    lines.push("  artifacts:");
    for (const a of st.artifacts) lines.push(`    ${a.name}  ${a.size} bytes  sha256:${a.sha256.slice(0, 12)}`);
  }
  for (const r of st.testReports ?? []) lines.push(...formatTestReport(r, style));
  lines.push(`  log: ${st.log.bytes} bytes${st.log.truncated ? " (truncated)" : ""}`);
  return lines.join("\n");
}

/** One line with the counts, then each failed case with its message (the server cleaned the text of control characters). */
export function formatTestReport(r: TestReport, style: Style): string[] {
  const lines = [`  tests (${r.artifact}, ${r.format}):`];
  const c = r.counts;
  if (c) {
    const bad = c.failures + c.errors;
    const parts = [style.green(`${c.passed} passed`), bad > 0 ? style.red(`${c.failures} failed`) : `${c.failures} failed`];
    if (c.errors > 0) parts.push(style.red(`${c.errors} errors`));
    parts.push(c.skipped > 0 ? style.yellow(`${c.skipped} skipped`) : `${c.skipped} skipped`);
    lines[0] += ` ${c.tests} tests: ${parts.join(", ")}`;
  }
  for (const f of r.failed) {
    const where = [f.suite, f.classname].filter((x): x is string => x !== null && x !== "").join(" › ");
    lines.push(`    ${style.red(f.kind === "error" ? "error" : "✗")} ${where ? `${where} › ` : ""}${f.name}${f.message ? `: ${f.message.split("\n")[0] ?? ""}` : ""}`);
  }
  if (r.failedOmitted > 0) lines.push(`    … ${r.failedOmitted} more failed (see the report artifact)`);
  if (r.notice) lines.push(`    ${style.yellow(`notice: ${r.notice}`)}`);
  return lines;
}
