/** Prometheus metrics on a private Registry (never prom-client's global one). */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { GC_WHAT, type GcResult } from "../engine/collector.ts";
import type { EngineMetrics } from "../engine/context.ts";
import type { StateStore } from "../engine/state-store.ts";
import type { LeaseWaiters } from "../engine/lease-waiters.ts";

export class ServerMetrics implements EngineMetrics {
  readonly registry = new Registry();
  private readonly expiries: Counter;
  private readonly retries: Counter;
  private readonly logBytesTotal: Counter;
  private readonly leases: Counter;
  private readonly gcPasses: Counter;
  private readonly gcRemoved: Counter<"what">;
  private readonly gcReclaimed: Counter<"what">;
  private readonly logArchives: Counter;
  private readonly logArchivedBytes: Counter;
  readonly requestSeconds: Histogram<"method" | "route" | "status">;
  /** requestSeconds' series by "method route status": prom-client hashes a labels object on every observe. */
  private readonly requestSeries = new Map<string, { observe(seconds: number): void }>();

  constructor(store: StateStore, waiters: LeaseWaiters) {
    const registers = [this.registry];
    this.expiries = new Counter({ name: "deltaci_lease_expiries_total", help: "Leases that expired without a heartbeat", registers });
    this.retries = new Counter({ name: "deltaci_retries_total", help: "Attempts queued again after a lost lease or runner_error", registers });
    this.logBytesTotal = new Counter({ name: "deltaci_log_bytes_total", help: "Log bytes committed", registers });
    this.leases = new Counter({ name: "deltaci_leases_total", help: "Leases granted", registers });
    this.gcPasses = new Counter({ name: "deltaci_gc_passes_total", help: "Retention and garbage-collection passes completed", registers });
    this.gcRemoved = new Counter({
      name: "deltaci_gc_removed_total", help: "Things garbage collection removed (jobs, logs of jobs, registrations, runners, uploads, blobs)", labelNames: ["what"], registers,
    });
    this.gcReclaimed = new Counter({ name: "deltaci_gc_reclaimed_bytes_total", help: "Bytes garbage collection freed (logs, uploads, blobs)", labelNames: ["what"], registers });
    this.logArchives = new Counter({ name: "deltaci_log_archives_total", help: "Attempt logs moved from the state store to the blob store once final", registers });
    this.logArchivedBytes = new Counter({ name: "deltaci_log_archived_bytes_total", help: "Log bytes moved from the state store to the blob store", registers });
    for (const what of GC_WHAT) {
      this.gcRemoved.inc({ what }, 0);
      this.gcReclaimed.inc({ what }, 0);
    }
    this.requestSeconds = new Histogram({
      name: "deltaci_http_request_duration_seconds", help: "HTTP request latency (long polls included)",
      labelNames: ["method", "route", "status"], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 60], registers,
    });
    new Gauge({
      name: "deltaci_jobs", help: "Jobs by state", labelNames: ["state"], registers,
      async collect() {
        const rows = await store.countJobsByState();
        this.reset();
        for (const r of rows) this.set({ state: r.state }, r.count);
      },
    });
    new Gauge({
      name: "deltaci_queue_depth", help: "Queued jobs", registers,
      async collect() {
        this.set((await store.countJobsByState()).find((r) => r.state === "queued")?.count ?? 0);
      },
    });
    new Gauge({
      name: "deltaci_active_leases", help: "Jobs leased, running or canceling", registers,
      async collect() {
        this.set((await store.countJobsByState()).filter((r) => r.state === "leased" || r.state === "running" || r.state === "canceling").reduce((n, r) => n + r.count, 0));
      },
    });
    new Gauge({
      name: "deltaci_lease_waiters", help: "Runners waiting in a lease long poll", registers,
      collect() {
        this.set(waiters.size);
      },
    });
  }

  /** One HTTP request's latency (the onResponse hook). */
  observeRequest(method: string, route: string, status: number, seconds: number): void {
    const key = `${method} ${route} ${status}`;
    let series = this.requestSeries.get(key);
    if (series === undefined) {
      series = this.requestSeconds.labels({ method, route, status: String(status) });
      this.requestSeries.set(key, series);
    }
    series.observe(seconds);
  }

  leaseExpired(): void {
    this.expiries.inc();
  }
  retried(): void {
    this.retries.inc();
  }
  logBytes(n: number): void {
    this.logBytesTotal.inc(n);
  }
  leased(): void {
    this.leases.inc();
  }
  logArchived(bytes: number): void {
    this.logArchives.inc();
    this.logArchivedBytes.inc(bytes);
  }
  gcPass(r: GcResult): void {
    this.gcPasses.inc();
    for (const what of GC_WHAT) {
      this.gcRemoved.inc({ what }, r.removed[what]);
      this.gcReclaimed.inc({ what }, r.reclaimedBytes[what]);
    }
  }
}
