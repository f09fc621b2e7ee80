/** `/fleet`: pools, live runners, demand per requirement set, unschedulable jobs, time charts. */
import { useEffect, useState } from "preact/hooks";
import type { FleetSnapshot } from "../../server/web/fleet.ts";
import type { Api } from "../api.ts";
import { duration, since } from "../format.ts";
import { StateBadge } from "./jobs.tsx";
import { ScrollX } from "../scroll-x.tsx";

function Chart({ title, values, unit }: { title: string; values: Array<number | null>; unit: string }) {
  const w = 240;
  const h = 48;
  const nums = values.filter((v): v is number => v !== null);
  const max = Math.max(1, ...nums);
  const step = values.length > 1 ? w / (values.length - 1) : w;
  const pts = values.map((v, i) => (v === null ? null : `${(i * step).toFixed(1)},${(h - (v / max) * (h - 4) - 2).toFixed(1)}`)).filter((p) => p !== null);
  const lastValue = nums[nums.length - 1];
  return (
    <figure class="chart">
      <figcaption>{title}: <strong>{lastValue === undefined ? "–" : `${lastValue}${unit}`}</strong> <span class="sub">(max {nums.length ? `${max}${unit}` : "–"})</span></figcaption>
      <svg viewBox={`0 0 ${w} ${h}`} width={w} height={h} role="img" aria-label={`${title} over the last ${values.length} samples`}>
        <polyline points={pts.join(" ")} fill="none" stroke="currentColor" stroke-width="2" />
      </svg>
    </figure>
  );
}

function reqText(r: FleetSnapshot["demand"][number]["requirements"]): string {
  const parts = [...r.labels, r.os ?? "", r.arch ?? ""].filter(Boolean);
  return parts.length ? parts.join(", ") : "any runner";
}

export function FleetPage({ api }: { api: Api }) {
  const [fleet, setFleet] = useState<FleetSnapshot | null>(null);
  useEffect(() => api.subscribe<FleetSnapshot>("/web/api/fleet/events", "fleet", setFleet), []);
  if (!fleet) return <p aria-live="polite">Loading…</p>;
  const hist = fleet.history;
  return (
    <>
      <h1>Fleet</h1>
      <section class="charts" aria-label="Time charts">
        <Chart title="Queue depth" values={hist.map((s) => s.queued)} unit="" />
        <Chart title="Pickup latency" values={hist.map((s) => s.pickupMs)} unit=" ms" />
        <Chart title="Jobs finished per minute" values={hist.map((s) => s.finishedPerMin)} unit="" />
      </section>
      <section aria-labelledby="pools-h">
        <h2 id="pools-h">Pools</h2>
        {fleet.pools.length === 0 ? <p class="sub">No controller has declared pools.</p> : (
          <ScrollX label="Pools table"><table>
            <thead><tr><th>Pool</th><th>Labels</th><th>Platform</th><th>Resources</th><th>Max runners</th><th>Min idle</th></tr></thead>
            <tbody>{fleet.pools.map((p) => (
              <tr><td>{p.name}</td><td>{p.labels.map((l) => <span class="label">{l}</span>)}</td><td>{p.os}/{p.arch}</td>
                <td>{p.resources.cpus} CPU · {p.resources.memoryMiB} MiB</td><td>{p.max}</td><td>{p.minIdle ?? "–"}</td></tr>
            ))}</tbody>
          </table></ScrollX>
        )}
      </section>
      <section aria-labelledby="runners-h">
        <h2 id="runners-h">Runners ({fleet.runners.length}: {fleet.runners.filter((r) => r.jobId === null).length} idle)</h2>
        <ScrollX label="Runners table"><table>
          <thead><tr><th>Runner</th><th>Labels</th><th>State</th><th>Job</th><th>For</th></tr></thead>
          <tbody>{fleet.runners.map((r) => (
            <tr><td>{r.name}<div class="sub">{r.runnerId}</div></td><td>{r.labels.map((l) => <span class="label">{l}</span>)}</td>
              <td><StateBadge state={r.state} /></td><td>{r.jobId === null ? <span class="sub">waiting for a job</span> : <a href={`/jobs/${r.jobId}`}>{r.jobName}</a>}</td><td>{duration(since(r.since))}</td></tr>
          ))}</tbody>
        </table></ScrollX>
      </section>
      <section aria-labelledby="demand-h">
        <h2 id="demand-h">Queue and demand</h2>
        <ScrollX label="Queue and demand table"><table>
          <thead><tr><th>Requirements</th><th>Queued</th><th>Running</th><th>Unschedulable</th></tr></thead>
          <tbody>{fleet.demand.map((d) => (
            <tr class={d.unschedulable ? "unschedulable" : ""}><td>{reqText(d.requirements)}</td><td>{d.queued}</td><td>{d.running}</td><td>{d.unschedulable ?? 0}</td></tr>
          ))}</tbody>
        </table></ScrollX>
        {fleet.demand.length === 0 && <p class="sub">Nothing queued or running.</p>}
      </section>
      {fleet.unschedulable.length > 0 && (
        <section aria-labelledby="unsched-h" class="unschedulable-list">
          <h2 id="unsched-h">Unschedulable jobs</h2>
          <ul>{fleet.unschedulable.map((j) => <li class="unschedulable"><a href={`/jobs/${j.jobId}`}>{j.name}</a>: {j.reason}</li>)}</ul>
        </section>
      )}
    </>
  );
}
