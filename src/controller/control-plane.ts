/** The slice of the control plane the controller uses (controller token), over the one HTTP transport. */
import { HttpClient } from "../client/http.ts";
import { withIsolationLabels, type CapacityPool, type DemandResponse } from "../protocol/schemas.ts";
import type { DemandEntry, Pool } from "./types.ts";

export interface DemandSnapshot {
  /** Null when the server does not version demand (then it cannot long-poll either). */
  version: number | null;
  demand: DemandEntry[];
}

export interface ControlPlane {
  readonly url: string;
  /** Answers at once when demand differs from `since`, else within `waitMs` or on the next change. */
  demand(since: number | null, waitMs: number, signal: AbortSignal): Promise<DemandSnapshot>;
  registrations(count: number, labels: string[], ttlMs: number, signal?: AbortSignal): Promise<string[]>;
  putCapacity(pools: readonly Pool[], signal?: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

export class HttpControlPlane implements ControlPlane {
  readonly url: string;
  private readonly http: HttpClient;
  private readonly token: string;
  private readonly timeoutMs: number;

  constructor(url: string, token: string, opts: { timeoutMs: number }) {
    this.url = url.replace(/\/+$/, "");
    this.http = new HttpClient(this.url, { timeoutMs: opts.timeoutMs, connections: 4 });
    this.token = token;
    this.timeoutMs = opts.timeoutMs;
  }

  async demand(since: number | null, waitMs: number, signal: AbortSignal): Promise<DemandSnapshot> {
    const q = since === null ? "" : `?since=${since}&waitMs=${waitMs}`;
    const res = await this.http.call<DemandResponse>({ method: "GET", path: `/v1/controller/demand${q}`, token: this.token, signal, timeoutMs: waitMs + this.timeoutMs });
    return { version: res.body.version ?? null, demand: res.body.demand };
  }

  async registrations(count: number, labels: string[], ttlMs: number, signal?: AbortSignal): Promise<string[]> {
    const res = await this.http.call<{ tokens: string[] }>({ method: "POST", path: "/v1/controller/registrations", token: this.token, json: { count, labels, ttlMs }, ...(signal ? { signal } : {}) });
    return res.body.tokens;
  }

  async putCapacity(pools: readonly Pool[], signal?: AbortSignal): Promise<void> {
    const body: { pools: CapacityPool[] } = { pools: pools.map((p) => ({ name: p.name, os: p.os, arch: p.arch, labels: withIsolationLabels(p.labels, p.isolation), resources: p.resources, max: p.max, minIdle: p.minIdle })) };
    await this.http.call({ method: "PUT", path: "/v1/controller/capacity", token: this.token, json: body, ...(signal ? { signal } : {}) });
  }

  async close(): Promise<void> {
    await this.http.destroy();
  }
}
