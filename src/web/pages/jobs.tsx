/** `/`: jobs, newest first, filtered by state, name and label, paged, updated by server push. */
import { useEffect, useState } from "preact/hooks";
import type { JobPage } from "../../server/web/web-api.ts";
import type { Api } from "../api.ts";
import { duration, since, time } from "../format.ts";
import { ScrollX } from "../scroll-x.tsx";

const STATES = ["", "queued", "leased", "running", "canceling", "succeeded", "failed", "errored", "canceled"];

interface Filter {
  state: string;
  name: string;
  label: string;
  before: string;
}

function readFilter(): Filter {
  const q = new URLSearchParams(location.search);
  return { state: q.get("state") ?? "", name: q.get("name") ?? "", label: q.get("label") ?? "", before: q.get("before") ?? "" };
}

function query(f: Filter): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(f)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

export function StateBadge({ state }: { state: string }) {
  return <span class={`state s-${state}`}>{state}</span>;
}

export function JobsPage({ api }: { api: Api }) {
  const [filter, setFilter] = useState<Filter>(readFilter);
  const [draft, setDraft] = useState<Filter>(filter);
  const [page, setPage] = useState<JobPage | null>(null);
  const [live, setLive] = useState(false);

  useEffect(() => {
    history.replaceState(null, "", `/${query(filter)}`);
    return api.subscribe<JobPage>(`/web/api/jobs/events${query(filter)}`, "jobs", setPage, setLive);
  }, [filter]);

  const apply = (e: Event) => {
    e.preventDefault();
    setFilter({ ...draft, before: "" });
  };
  const field = (k: keyof Filter) => (e: Event) => setDraft({ ...draft, [k]: (e.target as HTMLInputElement).value });

  return (
    <section aria-labelledby="jobs-h">
      <h1 id="jobs-h">Jobs <span class={live ? "live on" : "live"} aria-live="polite">{live ? "live" : "connecting…"}</span></h1>
      <form class="filters" onSubmit={apply} role="search">
        <label>State
          <select value={draft.state} onChange={field("state")}>
            {STATES.map((s) => <option value={s}>{s || "any"}</option>)}
          </select>
        </label>
        <label>Name <input type="search" value={draft.name} onInput={field("name")} maxLength={128} /></label>
        <label>Label <input type="search" value={draft.label} onInput={field("label")} maxLength={128} /></label>
        <button type="submit">Filter</button>
      </form>
      <ScrollX label="Jobs table">
        <table class="jobs">
          <thead><tr><th>State</th><th>Job</th><th>Labels</th><th>Created</th><th>Duration</th><th>Runner</th></tr></thead>
          <tbody>
            {page?.jobs.map((j) => (
              <tr key={j.jobId} data-job={j.jobId} class={j.unschedulable ? "unschedulable" : ""}>
                <td><StateBadge state={j.state} /></td>
                <td><a href={`/jobs/${j.jobId}`}>{j.name}</a><div class="sub">{j.jobId}</div>{j.unschedulable && <div class="warn">unschedulable: {j.unschedulable}</div>}</td>
                <td>{j.labels.map((l) => <span class="label">{l}</span>)}</td>
                <td>{time(j.createdAt)}</td>
                <td>{duration(since(j.createdAt, j.finishedAt))}</td>
                <td class="sub">{j.runnerId ?? "–"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </ScrollX>
      {page && page.jobs.length === 0 && <p>No jobs{query(filter) ? " match these filters" : " yet"}.</p>}
      <nav class="pager" aria-label="Pages">
        {filter.before && <button type="button" onClick={() => setFilter({ ...filter, before: "" })}>Newest</button>}
        {page?.next != null && <button type="button" onClick={() => setFilter({ ...filter, before: String(page.next) })}>Older</button>}
      </nav>
    </section>
  );
}
