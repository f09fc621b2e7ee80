/** The job page's test reports: counts and failed cases of each artifact declared with `report: junit`. */
import { useEffect, useState } from "preact/hooks";
import type { TestReport } from "../../protocol/test-report.ts";
import type { JobDetail } from "../../server/web/web-api.ts";
import type { Api } from "../api.ts";

function Report({ r }: { r: TestReport }) {
  const c = r.counts;
  return (
    <div class="report">
      <h3>{r.artifact} <span class="sub">({r.format})</span></h3>
      {c && (
        <p class="counts" data-testid="report-counts">
          <strong>{c.tests}</strong> tests: <span class="s-succeeded state">{c.passed} passed</span>{" "}
          <span class={`state ${c.failures ? "s-failed" : ""}`}>{c.failures} failed</span>{" "}
          {c.errors > 0 && <><span class="state s-failed">{c.errors} errors</span>{" "}</>}
          <span class={`state ${c.skipped ? "s-skipped" : ""}`}>{c.skipped} skipped</span>
        </p>
      )}
      {r.notice && <p class="warn" role="status">Notice: {r.notice}</p>}
      {r.failed.length > 0 && (
        <ul class="failed-tests" aria-label={`Failed tests in ${r.artifact}`}>
          {r.failed.map((f) => (
            <li>
              <span class="state s-failed">{f.kind}</span> <strong>{f.name}</strong>
              {(f.suite || f.classname) && <span class="sub"> {[f.suite, f.classname].filter(Boolean).join(" › ")}</span>}
              {f.message && <div class="message">{f.message}</div>}
              {f.details && f.details !== f.message && (
                <details><summary>Details{f.type ? ` (${f.type})` : ""}</summary><pre>{f.details}</pre></details>
              )}
            </li>
          ))}
        </ul>
      )}
      {r.failedOmitted > 0 && <p class="sub">… and {r.failedOmitted} more failed (download the artifact for all of them).</p>}
    </div>
  );
}

export function TestReports({ api, job }: { api: Api; job: JobDetail }) {
  const declared = job.spec.reports;
  // The report artifacts' digests: the summary is fetched again only when one of them changes.
  const key = job.artifacts.filter((a) => declared.includes(a.name)).map((a) => `${a.name}:${a.sha256}`).join(" ");
  const [reports, setReports] = useState<TestReport[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    if (key === "") return;
    api.get<{ testReports: TestReport[] }>(`/web/api/jobs/${job.jobId}/test-reports`).then((r) => setReports(r.testReports), (err: Error) => setError(err.message));
  }, [job.jobId, key]);
  if (declared.length === 0) return null;
  return (
    <section aria-labelledby="tests-h" class="test-reports">
      <h2 id="tests-h">Tests</h2>
      {error && <p role="alert" class="error">{error}</p>}
      {key === "" ? <p class="sub">No test report yet (declared: {declared.join(", ")}).</p>
        : reports === null ? <p class="sub" aria-live="polite">Reading the report…</p>
          : reports.map((r) => <Report r={r} />)}
    </section>
  );
}
