/** The controller's Prometheus metrics, in its own registry, and an optional `/metrics` listener. */
import { createServer, type Server } from "node:http";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { RUNNER_STATES, type RunnerState } from "./types.ts";

/** The pools, and each runner's pool and state: what the runners gauge counts. */
type RunnerCounts = { pools: readonly string[]; runners: ReadonlyArray<{ pool: string; state: RunnerState }> };

export class ControllerMetrics {
  readonly registry = new Registry();
  /** Where the runners gauge reads its values at each scrape (watchRunners); null: as last set. */
  private runnersNow: (() => RunnerCounts) | null = null;
  readonly runners = new Gauge({
    name: "deltaci_controller_runners", help: "Runners alive, by pool and state", labelNames: ["pool", "state"], registers: [this.registry],
    collect: () => {
      const now = this.runnersNow?.();
      if (now) this.setRunners(now);
    },
  });
  readonly decisions = new Counter({ name: "deltaci_controller_scale_decisions_total", help: "Scaling decisions executed (runners launched or drained)", labelNames: ["pool", "kind", "reason"], registers: [this.registry] });
  readonly spawnSeconds = new Histogram({
    name: "deltaci_controller_spawn_seconds", help: "Scaling decision to runner process started (token minted, process spawned)",
    labelNames: ["pool"], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers: [this.registry],
  });
  readonly exits = new Counter({ name: "deltaci_controller_runner_exits_total", help: "Runner exits by outcome (clean, failed, start_crash, killed)", labelNames: ["pool", "outcome"], registers: [this.registry] });
  readonly reaped = new Counter({ name: "deltaci_controller_reaped_total", help: "Leftovers of dead runners removed, by kind", labelNames: ["kind"], registers: [this.registry] });
  readonly adopted = new Counter({ name: "deltaci_controller_adopted_runners_total", help: "Runners of an earlier controller adopted at start", registers: [this.registry] });
  readonly unschedulable = new Gauge({ name: "deltaci_controller_unschedulable_jobs", help: "Queued jobs no pool can serve", registers: [this.registry] });
  readonly waiting = new Gauge({ name: "deltaci_controller_waiting_jobs", help: "Queued jobs a pool could serve that wait for capacity (limits, backoff)", registers: [this.registry] });
  readonly backoff = new Gauge({ name: "deltaci_controller_pool_backoff_seconds", help: "Remaining crash backoff per pool", labelNames: ["pool"], registers: [this.registry] });

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics) collectDefaultMetrics({ register: this.registry, prefix: "deltaci_controller_" });
  }

  private setRunners({ pools, runners }: RunnerCounts): void {
    for (const pool of new Set([...pools, ...runners.map((r) => r.pool)])) {
      for (const state of RUNNER_STATES) this.runners.set({ pool, state }, runners.filter((r) => r.pool === pool && r.state === state).length);
    }
  }

  /** Reads the runners gauge from `now` at each scrape: a runner's state is never a reconcile tick old. */
  watchRunners(now: () => RunnerCounts): void {
    this.runnersNow = now;
  }

  countReaped(items: readonly string[]): void {
    for (const item of items) this.reaped.inc({ kind: item.split(/[\s:]/, 1)[0] || "other" });
  }
}

/** Serves `GET /metrics` on host:port; resolves once listening. */
export async function serveMetrics(registry: Registry, host: string, port: number): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.method !== "GET" || (req.url ?? "").split("?")[0] !== "/metrics") {
      res.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { "content-type": registry.contentType }).end(text),
      (err: Error) => res.writeHead(500).end(err.message),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  const actualPort = typeof addr === "object" && addr ? addr.port : port;
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${actualPort}/metrics`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
