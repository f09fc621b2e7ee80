/** `/jobs/:jobId`: state, attempts, steps, failure, spec summary, artifacts, cancel, live log. */
import { useEffect, useState } from "preact/hooks";
import type { JobDetail } from "../../server/web/web-api.ts";
import type { Api } from "../api.ts";
import { bytes, duration, since, time } from "../format.ts";
import type { Section } from "../log/log-index.ts";
import { LogView } from "../log/log-view.tsx";
import { StateBadge } from "./jobs.tsx";
import { TestReports } from "./test-reports.tsx";
import { ScrollX } from "../scroll-x.tsx";

const TERMINAL = new Set(["succeeded", "failed", "errored", "canceled"]);

function Steps({ job, live }: { job: JobDetail; live: Section[] }) {
  const reported = job.steps;
  return (
    <ScrollX label="Steps table">
      <table class="steps">
        <thead><tr><th>#</th><th>Step</th><th>Result</th><th>Exit code</th><th>Duration</th></tr></thead>
        <tbody>
          {job.spec.steps.map((name, i) => {
            const s = live.find((x) => x.index === i);
            const r = reported[i];
            const exit = r ? r.exitCode : (s?.exitCode ?? null);
            const dur = s?.durationMs ?? (r?.startedAt ? since(r.startedAt, r.finishedAt) : null);
            const result = s ? (s.result ?? (s.end === -1 && !TERMINAL.has(job.state) ? "running" : "–")) : "–";
            return (
              <tr>
                <td>{i + 1}</td><td>{name}</td><td>{result !== "–" ? <StateBadge state={result} /> : "–"}</td>
                <td>{exit ?? (r?.signal ?? "–")}</td><td>{duration(dur)}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </ScrollX>
  );
}

function SpecSummary({ job }: { job: JobDetail }) {
  const s = job.spec;
  const image = s.image.kind === "host" ? "host" : JSON.stringify(s.image);
  const net = s.network.egress === "none" ? "no egress (loopback only)" : `egress allowlist: ${s.network.allow.join(", ")}`;
  return (
    <dl class="spec">
      <dt>Image</dt><dd>{image}</dd>
      <dt>Runs on</dt><dd>{s.runsOn.labels.length ? s.runsOn.labels.map((l) => <span class="label">{l}</span>) : "any runner"}{s.runsOn.os ? ` · ${s.runsOn.os}` : ""}{s.runsOn.arch ? `/${s.runsOn.arch}` : ""}</dd>
      <dt>Limits</dt><dd>{s.limits.cpus} CPU · {s.limits.memoryMiB} MiB memory · {s.limits.diskMiB} MiB disk · {s.limits.pids} pids · timeout {duration(s.limits.timeoutMs)} · log {s.limits.logMiB} MiB</dd>
      <dt>Network</dt><dd>{net}</dd>
      <dt>Source</dt><dd>{s.source.kind}</dd>
    </dl>
  );
}

export function JobPage({ api, jobId }: { api: Api; jobId: string }) {
  const [job, setJob] = useState<JobDetail | null>(null);
  const [steps, setSteps] = useState<Section[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => api.subscribe<JobDetail>(`/web/api/jobs/${jobId}/events`, "job", (j) => {
    setJob(j);
    document.title = `${j.name} · ${j.state} · Delta CI`;
  }), [jobId]);
  useEffect(() => {
    api.get<JobDetail>(`/web/api/jobs/${jobId}`).then((j) => setJob((prev) => prev ?? j), (err: Error) => setError(err.message));
  }, [jobId]);

  const cancel = async (mode: "graceful" | "hard") => {
    setBusy(true);
    setError(null);
    try {
      await api.post(`/web/api/jobs/${jobId}/cancel`, { mode });
    } catch (err) {
      setError(`Cancel failed: ${(err as Error).message}`);
    } finally {
      setBusy(false);
    }
  };

  if (!job) return <p aria-live="polite">{error ?? "Loading…"}</p>;
  const terminal = TERMINAL.has(job.state);
  return (
    <article class="job">
      <header class="job-head">
        <h1>{job.name} <StateBadge state={job.state} /></h1>
        <div class="sub">{job.jobId} · run {job.runId} · created {time(job.createdAt)}{job.finishedAt ? ` · took ${duration(since(job.createdAt, job.finishedAt))}` : ""}</div>
        <div class="actions">
          {!terminal && job.state !== "canceling" && <button type="button" disabled={busy} onClick={() => void cancel("graceful")}>Cancel</button>}
          {job.state === "canceling" && job.cancelMode !== "hard" && <button type="button" class="danger" disabled={busy} onClick={() => void cancel("hard")}>Stop now (hard)</button>}
        </div>
        {error && <p role="alert" class="error">{error}</p>}
      </header>
      {job.unschedulable && <p class="warn" role="status">Unschedulable: {job.unschedulable}</p>}
      {job.failure && (
        <section class="failure" aria-labelledby="fail-h">
          <h2 id="fail-h">Failure</h2>
          <p><strong>{job.failure.reason}</strong>{job.failure.step !== null ? ` in step ${job.failure.step + 1}` : ""}: {job.failure.message}</p>
        </section>
      )}
      <TestReports api={api} job={job} />
      <div class="cols">
        <section aria-labelledby="steps-h"><h2 id="steps-h">Steps</h2><Steps job={job} live={steps} /></section>
        <section aria-labelledby="spec-h"><h2 id="spec-h">Spec</h2><SpecSummary job={job} /></section>
      </div>
      <section aria-labelledby="att-h">
        <h2 id="att-h">Attempts</h2>
        <ScrollX label="Attempts table">
          <table class="attempts">
            <thead><tr><th>#</th><th>State</th><th>Runner</th><th>Started</th><th>Finished</th><th>Reason</th></tr></thead>
            <tbody>
              {job.attempts.map((a) => (
                <tr><td>{a.attempt}</td><td><StateBadge state={a.state} /></td><td class="sub">{a.runnerId ?? "–"}</td><td>{time(a.startedAt)}</td><td>{time(a.finishedAt)}</td><td>{a.reason ?? "–"}</td></tr>
              ))}
            </tbody>
          </table>
        </ScrollX>
      </section>
      <section aria-labelledby="art-h">
        <h2 id="art-h">Artifacts</h2>
        {job.artifacts.length === 0 ? <p class="sub">None{job.spec.artifacts.length ? ` yet (declared: ${job.spec.artifacts.join(", ")})` : ""}.</p> : (
          <ul class="artifacts">
            {job.artifacts.map((a) => (
              <li><a href={`/web/api/jobs/${job.jobId}/artifacts/${encodeURIComponent(a.name)}`} download={a.name}>{a.name}</a> <span class="sub">{bytes(a.size)} · sha256 <code>{a.sha256}</code></span></li>
            ))}
          </ul>
        )}
      </section>
      {job.attempt > 0 && <LogView key={`${job.jobId}:${job.attempt}`} jobId={job.jobId} attempt={job.attempt} live={!terminal} onSteps={setSteps} />}
    </article>
  );
}
