/**
 * Test harness for the reference server: a real server on loopback with a temp data dir.
 * Leases last 30 s by default; tests of expiry use a short ttl only where nothing must survive
 * it, or a JumpClock to expire one lease while the next still has its whole ttl (load-proof).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import { systemClock, type Clock } from "../src/base/clock.ts";
import type { BlobStore } from "../src/server/blobs/blob-store.ts";
import { openBlobStore } from "../src/server/blobs/open-blob-store.ts";
import { startServer, type BlobStoreOptions, type RunningServer, type ServerOptions } from "../src/server/index.ts";
import type { Capabilities, SubmittedJobSpec, Lease } from "../src/protocol/schemas.ts";
import { newToken } from "../src/base/ids.ts";
import { createTestDatabase, testStoreIsPostgres, type TestDatabase } from "./support/pg-test-db.ts";

/** Parsed JSON bodies in tests are read loosely on purpose. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

export interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Json;
  raw: Buffer;
}

export class TestServer {
  constructor(readonly srv: RunningServer, readonly dir: string, readonly db: TestDatabase | null = null) {}

  get url(): string {
    return this.srv.url;
  }

  async call(method: string, path: string, opts: { token?: string | null; json?: unknown; body?: Buffer | string; headers?: Record<string, string> } = {}): Promise<Res> {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    let body: Buffer | string | undefined = opts.body;
    if (opts.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(opts.json);
    }
    const res = await request(this.url + path, { method: method as "GET", headers, body: body ?? null, headersTimeout: 120_000, bodyTimeout: 120_000 });
    const raw = Buffer.from(await res.body.arrayBuffer());
    const ct = String(res.headers["content-type"] ?? "");
    let parsed: unknown = raw;
    if (ct.includes("json") && raw.length > 0) parsed = JSON.parse(raw.toString("utf8"));
    return { status: res.statusCode, headers: res.headers, body: parsed, raw };
  }

  api(method: string, path: string, json?: unknown): Promise<Res> {
    return this.call(method, path, { token: this.srv.apiToken, ...(json === undefined ? {} : { json }) });
  }

  ctl(method: string, path: string, json?: unknown): Promise<Res> {
    return this.call(method, path, { token: this.srv.controllerToken, ...(json === undefined ? {} : { json }) });
  }

  async submit(spec: Partial<SubmittedJobSpec> = {}, extra: { fork?: boolean; secrets?: Record<string, string> } = {}): Promise<string> {
    const r = await this.api("POST", "/v1/jobs", { spec: jobSpec(spec), fork: extra.fork ?? false, ...(extra.secrets ? { secrets: extra.secrets } : {}) });
    if (r.status !== 201) throw new Error(`submit: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.jobId as string;
  }

  /** A registered runner's session token. */
  async runner(caps: Partial<Capabilities> = {}): Promise<string> {
    const reg = await this.ctl("POST", "/v1/controller/registrations", { count: 1, labels: [] });
    if (reg.status !== 201) throw new Error(`registrations: ${reg.status}`);
    const r = await this.call("POST", "/v1/runner/register", { token: reg.body.tokens[0], json: { name: "t", version: "1", capabilities: capabilities(caps) } });
    if (r.status !== 201) throw new Error(`register: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.sessionToken as string;
  }

  async lease(session: string, waitMs = 0): Promise<Lease | null> {
    const r = await this.call("POST", "/v1/runner/lease", { token: session, json: { waitMs } });
    if (r.status === 204) return null;
    if (r.status !== 200) throw new Error(`lease: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.lease as Lease;
  }

  heartbeat(leaseToken: string, body: Record<string, unknown> = {}): Promise<Res> {
    return this.call("POST", "/v1/runner/heartbeat", { token: leaseToken, json: { state: "running", step: 0, logBytes: 0, ...body } });
  }

  log(leaseToken: string, start: number, data: Buffer | string): Promise<Res> {
    const b = Buffer.from(data);
    return this.call("PUT", "/v1/runner/log", {
      token: leaseToken, body: b, headers: { "content-type": "application/octet-stream", "content-range": `bytes ${start}-${start + b.length - 1}/*` },
    });
  }

  complete(leaseToken: string, body: Record<string, unknown> = {}, path = "/v1/runner/complete"): Promise<Res> {
    return this.call("POST", path, { token: leaseToken, json: completeBody(body) });
  }

  async status(jobId: string): Promise<Json> {
    const r = await this.api("GET", `/v1/jobs/${jobId}`);
    if (r.status !== 200) throw new Error(`status: ${r.status}`);
    return r.body;
  }

  /** Polls job status until `pred` holds (the sweeper runs on its own interval). */
  async waitFor(jobId: string, pred: (s: Json) => boolean, timeoutMs = 30_000): Promise<Json> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.status(jobId);
      if (pred(s)) return s;
      if (Date.now() > deadline) throw new Error(`timed out waiting; last state ${s.state}: ${JSON.stringify(s.transitions.slice(-3))}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** The value of a `/metrics` line `name{what="…"}` (or `name` alone); NaN when absent. */
  async metric(name: string, what?: string): Promise<number> {
    const text = (await this.call("GET", "/metrics")).raw.toString("utf8");
    const want = what === undefined ? name : `${name}{what="${what}"}`;
    const line = text.split("\n").find((l) => l.startsWith(`${want} `));
    return line === undefined ? NaN : Number(line.slice(want.length + 1));
  }

  async close(): Promise<void> {
    await this.srv.close();
    await rm(this.dir, { recursive: true, force: true });
    await this.db?.drop();
  }
}

/** Real time plus a jump offset: `advance(ms)` makes deadlines pass without waiting for them. */
export class JumpClock implements Clock {
  private offset = 0;
  now(): number {
    return Date.now() + this.offset;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return systemClock.sleep(ms, signal);
  }
  advance(ms: number): void {
    this.offset += ms;
  }
}

export const EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

export function completeBody(over: Record<string, unknown> = {}): Record<string, unknown> {
  return { result: "succeeded", exitCode: 0, failure: null, steps: [], artifacts: [], log: { bytes: 0, sha256: EMPTY_SHA }, ...over };
}

export function capabilities(over: Partial<Capabilities> = {}): Capabilities {
  return { os: "linux", arch: "x64", labels: ["linux"], toolchains: {}, resources: { cpus: 4, memoryMiB: 8192, diskMiB: 16384 }, isolation: ["oci"], ...over };
}

export function jobSpec(over: Partial<SubmittedJobSpec> = {}): SubmittedJobSpec {
  return {
    name: "test-job", runsOn: { labels: ["linux"] }, image: { kind: "host" }, steps: [{ name: "s", run: "true" }], env: {},
    limits: { timeoutMs: 60_000, cpus: 1, memoryMiB: 512, diskMiB: 1024, pids: 256, logMiB: 64 },
    network: { egress: "none" }, source: { kind: "none" }, caches: [], artifacts: [], ...over,
  };
}

/**
 * A server on loopback with a temp data dir; on SQLite, or on a fresh PostgreSQL database when
 * DELTACI_TEST_STORE=postgres (the same tests then cover both stores). `sqliteOnly`: the test
 * looks at SQLite's own files (the log files, the state.db), so it always runs on SQLite.
 */
export async function startTestServer(over: Partial<ServerOptions> = {}, opts: { sqliteOnly?: boolean } = {}): Promise<TestServer> {
  const dir = await mkdtemp(join(tmpdir(), "deltaci-server-test-"));
  let db: TestDatabase | null = null;
  try {
    const pg: Partial<ServerOptions> = {};
    if (testStoreIsPostgres() && over.databaseUrl === undefined && opts.sqliteOnly !== true) {
      db = await createTestDatabase();
      Object.assign(pg, { databaseUrl: db.url, apiToken: newToken("api"), controllerToken: newToken("controller") });
    }
    const srv = await startServer({ dataDir: dir, host: "127.0.0.1", port: 0, leaseTtlMs: 30_000, heartbeatIntervalMs: 500, sweepIntervalMs: 100, ...pg, ...over });
    return new TestServer(srv, dir, db);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    await db?.drop();
    throw err;
  }
}

/** A test server on a JumpClock with its blob store, and that store as the test sees it (same data dir or bucket prefix). */
export interface BlobServer {
  s: TestServer;
  clock: JumpClock;
  blobs: BlobStore;
  close(): Promise<void>;
}

export async function startBlobServer(blobStore: BlobStoreOptions, over: Partial<ServerOptions> = {}): Promise<BlobServer> {
  const clock = new JumpClock();
  const s = await startTestServer({ clock, blobStore, ...over });
  const blobs = await openBlobStore(blobStore, s.dir);
  return {
    s, clock, blobs,
    close: async () => {
      await blobs.close();
      await s.close();
    },
  };
}
