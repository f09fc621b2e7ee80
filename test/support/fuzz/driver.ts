/**
 * Sends generated requests in batches and checks the invariants: no 5xx, the server never goes
 * away, `/healthz` answers throughout, and a batch whose every state-changing request was refused
 * leaves the snapshot (jobs, attempts, logs, uploads, runners, blob files) exactly as it was.
 */
import { connect } from "node:net";
import { loadavg } from "node:os";
import { Readable } from "node:stream";
import fc from "fast-check";
import { Pool } from "undici";
import { fuzzRequest, type FuzzRequest } from "./requests.ts";
import type { FuzzWorld } from "./world.ts";

export interface FuzzOptions {
  seed: number;
  requests: number;
  batchSize: number;
  concurrency: number;
  /** A request without an answer after this long counts as a hang. */
  requestTimeoutMs: number;
}

type RequestSummary = Pick<FuzzRequest, "endpoint" | "method" | "path" | "headers"> & { bodyBytes: number; bodyHead: string };

export interface FuzzFailure {
  kind: "5xx" | "hang" | "state" | "healthz";
  detail: string;
  request?: RequestSummary;
}

export interface FuzzReport {
  seed: number;
  requests: number;
  byEndpoint: Record<string, Record<string, number>>;
  byStatus: Record<string, number>;
  /**
   * `unknownOutcome`: batches with a state-changing request whose connection closed without an
   * answer (status 0): the server may have done the work before the close (a raw request that
   * ended its side early, say). Such a batch is rebaselined, not compared.
   */
  batches: { total: number; comparedUnchanged: number; rebaselined: number; unknownOutcome: number };
  healthz: { probes: number; failures: number; maxMs: number };
  failures: FuzzFailure[];
  elapsedMs: number;
  requestsPerSecond: number;
  loadavg: number[];
}

/** Raw sockets carry what an HTTP client library refuses to send: NUL or CR in headers, raw unicode paths, a lying Content-Length. */
function needsRaw(r: FuzzRequest): boolean {
  if (r.lieLength || !/^[\x21-\x7e]*$/.test(r.path)) return true;
  return Object.entries(r.headers).some(([k, v]) => !/^[\t\x20-\x7e]*$/.test(v) || ["content-length", "transfer-encoding", "expect"].includes(k));
}

function bodyStream(r: FuzzRequest, body: Buffer): Readable {
  const size = Math.ceil(body.length / r.slowPieces);
  const delay = r.slowDelayMs;
  return Readable.from((async function* () {
    for (let i = 0; i < body.length; i += size) {
      if (i > 0) await new Promise((res) => setTimeout(res, delay));
      yield body.subarray(i, i + size);
    }
  })());
}

/** Status code, or 0 when the server closed the connection without an answer (fine for a malformed request). */
async function sendPooled(pool: Pool, r: FuzzRequest, timeoutMs: number): Promise<number> {
  const body = r.body === null ? null : r.slowPieces > 1 ? bodyStream(r, r.body) : r.body;
  const res = await pool.request({ method: r.method, path: r.path, headers: r.headers, body, signal: AbortSignal.timeout(timeoutMs), headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  res.body.on("error", () => undefined);
  if (r.path.includes("follow=")) res.body.destroy();
  else await res.body.dump({ limit: 1 << 20 }).catch(() => undefined);
  return res.statusCode;
}

/** How long a raw request waits for the first byte of its answer before it ends its side (a framing the server still waits on). */
const RAW_HALF_CLOSE_MS = 1000;

async function sendRaw(url: URL, r: FuzzRequest, timeoutMs: number): Promise<number> {
  const body = r.body ?? Buffer.alloc(0);
  const headers: Record<string, string> = { host: url.host, connection: "close", ...r.headers };
  if (!("content-length" in r.headers) && !("transfer-encoding" in r.headers)) headers["content-length"] = String(r.lieLength ? body.length + 100 : body.length);
  const head = `${r.method} ${r.path} HTTP/1.1\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}`).join("\r\n")}\r\n\r\n`;
  return new Promise((resolve, reject) => {
    const sock = connect(Number(url.port), url.hostname);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no answer in ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on("data", (d: Buffer) => chunks.push(d));
    sock.on("error", () => undefined);
    sock.on("close", () => {
      clearTimeout(timer);
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(Buffer.concat(chunks).subarray(0, 32).toString("latin1"));
      resolve(m ? Number(m[1]) : 0);
    });
    sock.write(Buffer.from(head, "utf8"));
    // A lying length ends the stream early: the server must give up on the rest, not wait forever.
    if (r.lieLength) sock.end(body);
    else {
      // Otherwise the answer is awaited before the half-close: Node's server drops the answer of a
      // request whose client has ended its side (the request's work may still be done).
      sock.write(body);
      const endLater = setTimeout(() => sock.end(), RAW_HALF_CLOSE_MS);
      sock.once("data", () => clearTimeout(endLater));
      sock.once("close", () => clearTimeout(endLater));
    }
  });
}

function describe(r: FuzzRequest): RequestSummary {
  return { endpoint: r.endpoint, method: r.method, path: r.path, headers: r.headers, bodyBytes: r.body?.length ?? 0, bodyHead: r.body?.subarray(0, 200).toString("utf8") ?? "" };
}

const MUTATING = new Set(["POST", "PUT", "DELETE", "PATCH"]);
/** Accepted, but nothing the snapshot holds changes: a heartbeat moves only the lease expiry, a sign-in adds a web session. */
const SNAPSHOT_NEUTRAL = new Set(["POST /v1/runner/heartbeat", "POST /web/session"]);

function changesState(r: FuzzRequest, status: number): boolean {
  return MUTATING.has(r.method) && !SNAPSHOT_NEUTRAL.has(r.endpoint) && status >= 200 && status < 300 && status !== 204;
}

export async function runFuzz(world: FuzzWorld, o: FuzzOptions): Promise<FuzzReport> {
  const url = new URL(world.url);
  const pool = new Pool(world.url, { connections: o.concurrency, pipelining: 1 });
  const rep: FuzzReport = {
    seed: o.seed, requests: 0, byEndpoint: {}, byStatus: {}, batches: { total: 0, comparedUnchanged: 0, rebaselined: 0, unknownOutcome: 0 },
    healthz: { probes: 0, failures: 0, maxMs: 0 }, failures: [], elapsedMs: 0, requestsPerSecond: 0, loadavg: [],
  };
  const started = performance.now();
  const stopProbes = new AbortController();
  const probes = (async () => {
    while (!stopProbes.signal.aborted) {
      const t0 = performance.now();
      const ok = await world.healthy(5000);
      const ms = performance.now() - t0;
      rep.healthz.probes++;
      rep.healthz.maxMs = Math.max(rep.healthz.maxMs, Math.round(ms));
      if (!ok) {
        rep.healthz.failures++;
        rep.failures.push({ kind: "healthz", detail: `no 200 from /healthz within 5000 ms (after ${Math.round(ms)} ms)` });
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  try {
    let before = await world.snapshot();
    for (let batch = 0; rep.requests < o.requests; batch++) {
      const n = Math.min(o.batchSize, o.requests - rep.requests);
      const reqs = fc.sample(fuzzRequest(world.targets()), { numRuns: n, seed: o.seed + batch });
      let accepted = 0;
      let unknown = 0;
      let next = 0;
      const worker = async () => {
        for (let i = next++; i < reqs.length; i = next++) {
          const r = reqs[i] as FuzzRequest;
          let status: number;
          try {
            status = needsRaw(r) ? await sendRaw(url, r, o.requestTimeoutMs) : await sendPooled(pool, r, o.requestTimeoutMs);
          } catch (err) {
            const msg = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
            // Client-side refusals (undici validating what it sends) are resent raw; anything else is a hang or a reset.
            if (/InvalidArgument|invalid/i.test(msg)) status = await sendRaw(url, r, o.requestTimeoutMs).catch(() => -1);
            else status = /abort|timeout/i.test(msg) ? -1 : 0;
            if (status === -1) rep.failures.push({ kind: "hang", detail: msg, request: describe(r) });
          }
          rep.requests++;
          const per = (rep.byEndpoint[r.endpoint] ??= {});
          per[String(status)] = (per[String(status)] ?? 0) + 1;
          rep.byStatus[String(status)] = (rep.byStatus[String(status)] ?? 0) + 1;
          if (status >= 500) rep.failures.push({ kind: "5xx", detail: `${status}`, request: describe(r) });
          if (changesState(r, status)) accepted++;
          else if (status === 0 && MUTATING.has(r.method)) unknown++;
        }
      };
      await Promise.all(Array.from({ length: o.concurrency }, worker));
      rep.batches.total++;
      if (accepted === 0 && unknown > 0) rep.batches.unknownOutcome++;
      const compared = accepted === 0 && unknown === 0;
      const after = await settledSnapshot(world, before, compared);
      if (compared) {
        if (after === before) rep.batches.comparedUnchanged++;
        else rep.failures.push({ kind: "state", detail: `batch ${batch} (seed ${o.seed + batch}): every state-changing request was refused, yet the state changed: ${firstDifference(before, after)}` });
      } else rep.batches.rebaselined++;
      await world.refill();
      before = await world.snapshot();
      if (rep.failures.length > 50) break;
    }
  } finally {
    stopProbes.abort();
    await probes;
    await pool.close();
  }
  if (!(await world.healthy(5000))) rep.failures.push({ kind: "healthz", detail: "the server does not answer /healthz after the run" });
  rep.elapsedMs = Math.round(performance.now() - started);
  rep.requestsPerSecond = Math.round(rep.requests / (rep.elapsedMs / 1000));
  rep.loadavg = loadavg().map((x) => Math.round(x * 100) / 100);
  return rep;
}

/** Aborted uploads are removed asynchronously: give the server a moment before calling a difference a change. */
async function settledSnapshot(world: FuzzWorld, before: string, expectSame: boolean): Promise<string> {
  let after = await world.snapshot();
  for (let i = 0; expectSame && after !== before && i < 10; i++) {
    await new Promise((r) => setTimeout(r, 100));
    after = await world.snapshot();
  }
  return after;
}

function firstDifference(a: string, b: string): string {
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  return `at ${i}: before …${a.slice(Math.max(0, i - 120), i + 120)}… after …${b.slice(Math.max(0, i - 120), i + 120)}…`;
}
