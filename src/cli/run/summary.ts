/** The end of `deltaci run`: one line per job (result, duration, failure), then its artifacts on disk. */
import { relative } from "node:path";
import { formatDurationMs } from "../../base/units.ts";
import type { JobStatus } from "../../protocol/schemas.ts";
import type { Style } from "../style.ts";
import type { SubmittedJob } from "../submit-jobs.ts";
import type { DownloadedArtifact } from "./job-watch.ts";

export interface JobOutcome {
  sub: SubmittedJob;
  status: JobStatus;
  artifacts: DownloadedArtifact[];
  artifactError: string | null;
}

export function jobResult(st: JobStatus): "succeeded" | "failed" | "errored" | "canceled" | "unfinished" {
  return st.state === "succeeded" || st.state === "failed" || st.state === "errored" || st.state === "canceled" ? st.state : "unfinished";
}

function durationOf(st: JobStatus): string {
  const start = Date.parse(st.createdAt);
  const end = st.finishedAt ? Date.parse(st.finishedAt) : NaN;
  return Number.isFinite(start) && Number.isFinite(end) ? formatDurationMs(Math.max(0, end - start)) : "-";
}

function failureText(st: JobStatus): string {
  const f = st.failure;
  if (!f) return st.state === "canceled" ? "canceled" : "";
  const step = f.step !== null ? st.steps[f.step] : undefined;
  const where = f.step !== null ? ` in step ${f.step + 1}${step ? ` "${step.name}"` : ""}` : "";
  return `${f.reason}${where}${f.message ? `: ${f.message}` : ""}`;
}

export function formatSummary(outcomes: JobOutcome[], o: { style: Style; cwd: string; durationMs: number }): string {
  const s = o.style;
  const width = Math.max(...outcomes.map((x) => x.sub.job.name.length), 4);
  const lines = ["", s.bold("Summary")];
  for (const x of outcomes) {
    const st = x.status;
    const ok = st.state === "succeeded";
    const mark = ok ? s.green("✓") : st.state === "canceled" ? s.yellow("⊘") : s.red("✗");
    const state = ok ? s.green(st.state) : st.state === "canceled" ? s.yellow(st.state) : s.red(st.state);
    const why = failureText(st);
    lines.push(`${mark} ${x.sub.job.name.padEnd(width)}  ${state} ${s.dim(durationOf(st))}${why && !ok ? `  ${why}` : ""}`);
    for (const a of x.artifacts) lines.push(`    ${s.dim("artifact")} ${a.name} → ${relative(o.cwd, a.path)} ${s.dim(`(${a.size} bytes)`)}`);
    if (x.artifactError) lines.push(`    ${s.yellow(`artifacts not downloaded: ${x.artifactError}`)}`);
  }
  const failed = outcomes.filter((x) => x.status.state !== "succeeded").length;
  lines.push(
    failed === 0
      ? s.green(`${outcomes.length} job${outcomes.length === 1 ? "" : "s"} succeeded in ${formatDurationMs(o.durationMs)}`)
      : s.red(`${failed} of ${outcomes.length} job${outcomes.length === 1 ? "" : "s"} did not succeed (${formatDurationMs(o.durationMs)})`),
  );
  return `${lines.join("\n")}\n`;
}
