/**
 * Test support for the runner's end-to-end tests: a real server on loopback (short leases),
 * job API helpers, job spec builder, and an in-process runner (runRunner) with a chosen
 * sandbox backend. Every wait polls a condition with a generous timeout; nothing sleeps and hopes.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { systemClock } from "../../src/base/clock.ts";
import { HttpClient } from "../../src/client/http.ts";
import { RetryPolicy } from "../../src/client/retry-policy.ts";
import { RunnerClient } from "../../src/client/runner-client.ts";
import type { JobStatus, SubmittedJobSpec } from "../../src/protocol/schemas.ts";
import { runRunner, type RunnerExit, type RunnerOptions } from "../../src/runner/runner.ts";
import { nullLogger, type RunnerLogger, type RunnerProtocol } from "../../src/runner/ports.ts";
import type { SandboxFactory } from "../../src/sandbox/types.ts";
import { slotInfo } from "../../src/sandbox/slots.ts";
import { startServer, type RunningServer, type ServerOptions } from "../../src/server/index.ts";

export interface Harness {
  server: RunningServer;
  root: string;
  api: Api;
  close(): Promise<void>;
}

export async function startHarness(opts: Partial<ServerOptions> = {}): Promise<Harness> {
  const root = mkdtempSync(join(tmpdir(), "deltaci-runner-e2e-"));
  // The oci backend's mapped uids must traverse the path down to the slot's work dir.
  chmodSync(root, 0o711);
  const server = await startServer({ dataDir: join(root, "server"), port: 0, host: "127.0.0.1", leaseTtlMs: 4000, heartbeatIntervalMs: 1000, sweepIntervalMs: 100, durability: "normal", ...opts });
  const api = new Api(server.url, server.apiToken, server.controllerToken);
  const h: Harness = {
    server, root, api,
    // Through `h`: a test may replace the server (restart) and its Api.
    close: async () => {
      try {
        await h.api.close().catch(() => {});
        await h.server.close();
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    },
  };
  return h;
}

export class Api {
  readonly http: HttpClient;
  constructor(readonly url: string, readonly apiToken: string, readonly controllerToken: string) {
    this.http = new HttpClient(url, { timeoutMs: 30_000 });
  }

  async submit(spec: SubmittedJobSpec, secrets?: Record<string, string>, fork = false): Promise<string> {
    const res = await this.http.call<{ jobId: string }>({ method: "POST", path: "/v1/jobs", token: this.apiToken, json: { spec, fork, ...(secrets ? { secrets } : {}) } });
    return res.body.jobId;
  }

  async job(id: string): Promise<JobStatus> {
    return (await this.http.call<JobStatus>({ method: "GET", path: `/v1/jobs/${id}`, token: this.apiToken })).body;
  }

  async log(id: string, attempt?: number): Promise<Buffer> {
    const res = await this.http.raw({ method: "GET", path: `/v1/jobs/${id}/log${attempt ? `?attempt=${attempt}` : ""}`, token: this.apiToken });
    return Buffer.from(await res.body.arrayBuffer());
  }

  async artifact(id: string, name: string): Promise<Buffer> {
    const res = await this.http.raw({ method: "GET", path: `/v1/jobs/${id}/artifacts/${name}`, token: this.apiToken });
    return Buffer.from(await res.body.arrayBuffer());
  }

  async cancel(id: string, mode: "graceful" | "hard" = "graceful"): Promise<void> {
    await this.http.call({ method: "POST", path: `/v1/jobs/${id}/cancel`, token: this.apiToken, json: { mode } });
  }

  async registrationToken(labels: string[] = []): Promise<string> {
    const res = await this.http.call<{ tokens: string[] }>({ method: "POST", path: "/v1/controller/registrations", token: this.controllerToken, json: { count: 1, labels } });
    const t = res.body.tokens[0];
    if (!t) throw new Error("no registration token");
    return t;
  }

  async uploadSource(tar: Buffer): Promise<string> {
    const res = await this.http.call<{ sha256: string }>({ method: "POST", path: "/v1/sources", token: this.apiToken, body: tar, headers: { "content-type": "application/octet-stream" } });
    return res.body.sha256;
  }

  /** Polls until the job satisfies `pred` (generous deadline). */
  async waitFor(id: string, pred: (j: JobStatus) => boolean, what: string, timeoutMs = 120_000): Promise<JobStatus> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const j = await this.job(id);
      if (pred(j)) return j;
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}; job is ${j.state}: ${JSON.stringify(j.transitions.slice(-5))}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async waitDone(id: string, timeoutMs?: number): Promise<JobStatus> {
    return this.waitFor(id, (j) => ["succeeded", "failed", "errored", "canceled"].includes(j.state), "a final state", timeoutMs);
  }

  async close(): Promise<void> {
    await this.http.close();
  }
}

export function jobSpec(over: Partial<SubmittedJobSpec> & Pick<SubmittedJobSpec, "steps">): SubmittedJobSpec {
  return {
    name: "test-job",
    runsOn: { labels: [] },
    image: { kind: "host" },
    env: {},
    limits: { timeoutMs: 120_000, cpus: 1, memoryMiB: 512, diskMiB: 256, pids: 256, logMiB: 64 },
    network: { egress: "none" },
    source: { kind: "none" },
    caches: [],
    artifacts: [],
    ...over,
  };
}

let slotCounter = 0;

/** Runs one runner in this process against `server` with `factory`; resolves with its exit. */
export async function runInProcess(h: Harness, factory: SandboxFactory, over: Partial<RunnerOptions> & {
  logger?: RunnerLogger; signal?: AbortSignal; drain?: AbortSignal; serverUrl?: string; requestTimeoutMs?: number;
  /** Wraps the runner's protocol client (to act at a chosen point of the protocol). */
  wrapClient?: (client: RunnerProtocol) => RunnerProtocol;
} = {}): Promise<RunnerExit> {
  const token = await h.api.registrationToken(over.labels ?? []);
  const index = 40 + (slotCounter++ % 100);
  const slot = { ...slotInfo(index, join(h.root, "slots")), workDir: join(h.root, "slots", `slot-${index}`, "work") };
  mkdirSync(join(h.root, "slots", `slot-${index}`), { recursive: true, mode: 0o711 });
  const requestTimeoutMs = over.requestTimeoutMs ?? 5_000;
  const client: RunnerProtocol = new RunnerClient({
    http: new HttpClient(over.serverUrl ?? h.server.url, { timeoutMs: requestTimeoutMs }),
    retry: new RetryPolicy({ clock: systemClock, baseMs: 50, maxMs: 500, onRetry: (err, attempt, waitMs) => (over.logger ?? nullLogger).info({ err: String(err), attempt, waitMs }, "retry") }),
    requestTimeoutMs,
  });
  // Like a runner process, which exits only once its slot is torn down: the slot dir may then be removed.
  return runRunner({
    registrationToken: token, name: "test-runner", version: "0.1.0", labels: [], slot, cacheDir: h.root,
    idleTimeoutMs: 60_000, leaseWaitMs: 5_000, registerDeadlineMs: 30_000,
    timings: { flushIntervalMs: 50, flushBytes: 256 * 1024, chunkBytes: 1024 * 1024, cancelGraceMs: 10_000, tailUploadMs: 5_000, disposeMs: 60_000 },
    ...over,
  }, {
    client: over.wrapClient ? over.wrapClient(client) : client, sandboxFactory: factory, clock: systemClock, logger: over.logger ?? nullLogger,
    ...(over.signal ? { signal: over.signal } : {}), ...(over.drain ? { drain: over.drain } : {}),
  })
    .finally(() => factory.settle(slot));
}

/** A logger that keeps lines, for assertions and for failure messages. */
export function memoryLogger(): RunnerLogger & { lines: string[] } {
  const lines: string[] = [];
  const put = (level: string) => (fields: Record<string, unknown>, msg: string) => lines.push(`${level} ${msg} ${JSON.stringify(fields)}`);
  return { lines, info: put("info"), warn: put("warn"), error: put("error") };
}

/** Splits a job log into step output and parsed markers. */
export { parseMarker, nonceOf } from "../../src/logs/step-markers.ts";
