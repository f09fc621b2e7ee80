/**
 * One generated request per endpoint of the server (routes-*.ts): each starts from what a valid
 * request looks like and breaks its token, path, query, headers or body.
 */
import fc from "fast-check";
import { capabilities, completeBody, jobSpec } from "../../server-harness.ts";
import { evilNumber, evilString, malformedJson, mutatedJson, pctEncode, queryValue } from "./values.ts";
import type { Targets } from "./world.ts";

export interface FuzzRequest {
  /** `METHOD /route/:pattern`, the key the counts are kept under. */
  endpoint: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  body: Buffer | null;
  /** > 1: the body arrives in this many pieces, `slowDelayMs` apart (a slow client). */
  slowPieces: number;
  slowDelayMs: number;
  /** Announce a Content-Length other than the bytes sent (raw socket only). */
  lieLength: boolean;
}

type Json = Parameters<typeof mutatedJson>[0];
type TokenKind = "api" | "controller" | "registration" | "session" | "lease" | "none";
type BodyKind = { json: Json } | { octet: number } | "none";

interface Endpoint {
  endpoint: string;
  method: string;
  token: TokenKind;
  path: fc.Arbitrary<string>;
  body: BodyKind;
  /** Extra headers (Content-Range) for this endpoint. */
  headers?: fc.Arbitrary<Record<string, string>>;
}

const JSON_LIMIT_BYTES = 64 * 1024;

function pick<T>(xs: readonly T[], fallback: T): fc.Arbitrary<T> {
  return xs.length === 0 ? fc.constant(fallback) : fc.constantFrom(...xs);
}

/** A path segment: a real id, or a hostile one (encoded, or raw to reach the HTTP parser). */
function segment(real: readonly string[]): fc.Arbitrary<string> {
  return fc.oneof(
    { arbitrary: pick(real, "job_none"), weight: 5 },
    { arbitrary: evilString.map(pctEncode), weight: 3 },
    { arbitrary: evilString, weight: 1 },
    { arbitrary: fc.constantFrom("..", "%2F", "a".repeat(129), "job_" + "x".repeat(40)), weight: 1 },
  );
}

function query(names: readonly string[]): fc.Arbitrary<string> {
  return fc.array(fc.tuple(fc.constantFrom(...names), queryValue), { maxLength: 3 })
    .map((kv) => (kv.length === 0 ? "" : "?" + kv.map(([k, v]) => `${k}=${pctEncode(v)}`).join("&")));
}

/** `Content-Range` for log and artifact PUTs: plausible offsets near what is committed, and garbage. */
function contentRange(committed: number, total: boolean): fc.Arbitrary<Record<string, string>> {
  const n = fc.oneof(fc.constantFrom(0, committed, committed + 1, committed - 1, 2 ** 53, 999_999_999_999_999), fc.nat({ max: 10_000 }));
  return fc.oneof(
    { arbitrary: fc.tuple(n, n, fc.oneof(n, fc.constant(-1))).map(([s, e, t]) => ({ "content-range": `bytes ${s}-${e}/${total ? (t < 0 ? "*" : t) : "*"}` })), weight: 4 },
    { arbitrary: fc.tuple(evilNumber, evilNumber).map(([s, e]) => ({ "content-range": `bytes ${s}-${e}/*` })), weight: 2 },
    { arbitrary: fc.constantFrom("bytes */*", "bytes 0-/*", "bytes -1-5/*", "bytes=0-5", "items 0-1/2", "bytes 1234567890123456-1234567890123457/*", "", "bytes 0-0/0").map((v) => ({ "content-range": v })), weight: 2 },
    { arbitrary: evilString.map((v) => ({ "content-range": v })), weight: 1 },
    { arbitrary: fc.constant({}), weight: 1 },
  );
}

function endpoints(t: Targets): Endpoint[] {
  const live = t.live[0];
  const committed = live?.logBytes ?? 0;
  const jobId = segment(t.jobIds);
  const artId = segment(t.live.map((a) => a.artifactId));
  const artifact = { name: "out", size: 14, sha256: "a".repeat(64), mediaType: "text/plain", path: "out.bin" };
  const step = { name: "s", exitCode: 0, signal: null, startedAt: null, finishedAt: null };
  const pool = { name: "p", os: "linux", arch: "x64", labels: ["linux"], resources: { cpus: 2, memoryMiB: 1024, diskMiB: 1024 }, max: 3 };
  const c = fc.constant;
  return [
    { endpoint: "POST /v1/runner/register", method: "POST", token: "registration", path: c("/v1/runner/register"), body: { json: { name: "r", version: "1", capabilities: capabilities() } as Json } },
    { endpoint: "POST /v1/runner/lease", method: "POST", token: "session", path: c("/v1/runner/lease"), body: { json: { waitMs: 0 } } },
    { endpoint: "POST /v1/runner/heartbeat", method: "POST", token: "lease", path: c("/v1/runner/heartbeat"), body: { json: { state: "running", step: 0, logBytes: committed, waitMs: 0 } } },
    { endpoint: "PUT /v1/runner/log", method: "PUT", token: "lease", path: c("/v1/runner/log"), body: { octet: 300 * 1024 }, headers: contentRange(committed, false) },
    { endpoint: "POST /v1/runner/complete", method: "POST", token: "lease", path: c("/v1/runner/complete"), body: { json: completeBody({ steps: [step], artifacts: ["out"], log: { bytes: committed, sha256: "0".repeat(64) } }) as Json } },
    { endpoint: "POST /v1/runner/cancel-ack", method: "POST", token: "lease", path: c("/v1/runner/cancel-ack"), body: { json: completeBody({ result: "failed", exitCode: 143 }) as Json } },
    { endpoint: "GET /v1/runner/source", method: "GET", token: "lease", path: c("/v1/runner/source"), body: "none" },
    { endpoint: "POST /v1/runner/artifacts", method: "POST", token: "lease", path: c("/v1/runner/artifacts"), body: { json: artifact } },
    { endpoint: "HEAD /v1/runner/artifacts/:id/content", method: "HEAD", token: "lease", path: artId.map((id) => `/v1/runner/artifacts/${id}/content`), body: "none" },
    { endpoint: "GET /v1/runner/artifacts/:id/content", method: "GET", token: "lease", path: artId.map((id) => `/v1/runner/artifacts/${id}/content`), body: "none" },
    { endpoint: "PUT /v1/runner/artifacts/:id/content", method: "PUT", token: "lease", path: artId.map((id) => `/v1/runner/artifacts/${id}/content`), body: { octet: 64 }, headers: contentRange(0, true) },
    { endpoint: "POST /v1/controller/registrations", method: "POST", token: "controller", path: c("/v1/controller/registrations"), body: { json: { count: 1, labels: ["linux"], ttlMs: 60_000 } } },
    { endpoint: "GET /v1/controller/demand", method: "GET", token: "controller", path: query(["waitMs", "since"]).map((q) => `/v1/controller/demand${q}`), body: "none" },
    { endpoint: "PUT /v1/controller/capacity", method: "PUT", token: "controller", path: c("/v1/controller/capacity"), body: { json: { pools: [pool] } } },
    { endpoint: "POST /v1/jobs", method: "POST", token: "api", path: c("/v1/jobs"), body: { json: { spec: jobSpec({ runsOn: { labels: ["fuzz-nowhere"] } }), fork: false, secrets: { A: "b" } } as Json } },
    { endpoint: "GET /v1/jobs", method: "GET", token: "api", path: query(["state", "limit"]).map((q) => `/v1/jobs${q}`), body: "none" },
    { endpoint: "GET /v1/jobs/:id", method: "GET", token: "api", path: jobId.map((id) => `/v1/jobs/${id}`), body: "none" },
    { endpoint: "GET /v1/jobs/:id/log", method: "GET", token: "api", path: fc.tuple(jobId, query(["offset", "attempt", "follow"])).map(([id, q]) => `/v1/jobs/${id}/log${q}`), body: "none" },
    { endpoint: "POST /v1/jobs/:id/cancel", method: "POST", token: "api", path: jobId.map((id) => `/v1/jobs/${id}/cancel`), body: { json: { mode: "graceful" } } },
    { endpoint: "GET /v1/jobs/:id/artifacts/:name", method: "GET", token: "api", path: fc.tuple(jobId, segment(t.artifactNames)).map(([id, n]) => `/v1/jobs/${id}/artifacts/${n}`), body: "none" },
    { endpoint: "POST /v1/sources", method: "POST", token: "api", path: c("/v1/sources"), body: { octet: 1100 * 1024 } },
    { endpoint: "GET /healthz", method: "GET", token: "none", path: query(["x"]).map((q) => `/healthz${q}`), body: "none" },
    { endpoint: "GET /metrics", method: "GET", token: "none", path: c("/metrics"), body: "none" },
    { endpoint: "POST /web/session", method: "POST", token: "none", path: c("/web/session"), body: { json: { token: "dci_api_x" } } },
    { endpoint: "GET /web/api/jobs/:id", method: "GET", token: "none", path: jobId.map((id) => `/web/api/jobs/${id}`), body: "none" },
    { endpoint: "ANY unknown route", method: "GET", token: "api", path: evilString.map((s) => `/v1/${pctEncode(s)}`), body: "none" },
  ];
}

/** The right token most often; wrong kinds, used, expired, stale, other attempts' and garbage otherwise. */
function token(t: Targets, kind: TokenKind): fc.Arbitrary<string | null> {
  const right: Record<TokenKind, string[]> = {
    api: [t.apiToken], controller: [t.controllerToken], registration: t.registration, session: t.session,
    lease: t.live.map((a) => a.leaseToken), none: [],
  };
  const wrong = [t.apiToken, t.controllerToken, ...t.registration, ...t.session, ...t.live.map((a) => a.leaseToken)].filter((x) => !right[kind].includes(x));
  return fc.oneof(
    { arbitrary: right[kind].length > 0 ? fc.constantFrom(...right[kind]) : fc.constant(null), weight: 6 },
    { arbitrary: pick(wrong, null), weight: 2 },
    { arbitrary: pick(t.dead, null), weight: 2 },
    { arbitrary: evilString, weight: 1 },
    { arbitrary: fc.constant(null), weight: 1 },
  );
}

function authorization(tok: string | null, style: number): Record<string, string> {
  if (tok === null) return {};
  // Mostly well-formed, so the token itself (and then the body) is what gets judged.
  const forms = [`bearer ${tok}`, `Bearer  ${tok}`, `Basic ${tok}`, tok, `Bearer ${tok}x`];
  return { authorization: style % 6 === 0 ? (forms[style % forms.length] ?? "") : `Bearer ${tok}` };
}

const JSON_TYPES = ["application/json", "application/json", "application/json", "application/json; charset=utf-8", "text/plain", "application/octet-stream", "application/x-www-form-urlencoded", "", "application/json; charset=utf-16"];

function jsonBody(base: Json): fc.Arbitrary<{ body: Buffer | null; type: string }> {
  const text = fc.oneof(
    { arbitrary: mutatedJson(base).map((v) => JSON.stringify(v) ?? "null"), weight: 10 },
    { arbitrary: malformedJson(base), weight: 4 },
    { arbitrary: fc.constant(JSON.stringify(base)), weight: 1 },
    { arbitrary: fc.constantFrom("", " "), weight: 1 },
    { arbitrary: fc.constant(JSON.stringify(base) + " ".repeat(JSON_LIMIT_BYTES)), weight: 1 },
  );
  return fc.tuple(text, fc.constantFrom(...JSON_TYPES)).map(([s, type]) => ({ body: Buffer.from(s, "utf8"), type }));
}

function octetBody(oversize: number): fc.Arbitrary<{ body: Buffer | null; type: string }> {
  return fc.oneof(
    { arbitrary: fc.uint8Array({ maxLength: 2048 }).map((b) => ({ body: Buffer.from(b), type: "application/octet-stream" })), weight: 20 },
    { arbitrary: fc.constant({ body: Buffer.alloc(0), type: "application/octet-stream" }), weight: 2 },
    { arbitrary: fc.constant({ body: null, type: "" }), weight: 1 },
    { arbitrary: fc.uint8Array({ maxLength: 64 }).map((b) => ({ body: Buffer.from(b), type: "application/json" })), weight: 1 },
    { arbitrary: fc.constant({ body: Buffer.alloc(oversize, 0x61), type: "application/octet-stream" }), weight: 1 },
  );
}

/** `arb` once in `every` draws, null otherwise. */
function rarely<T>(arb: fc.Arbitrary<T>, every: number): fc.Arbitrary<T | null> {
  return fc.oneof({ arbitrary: arb, weight: 1 }, { arbitrary: fc.constant(null), weight: every - 1 });
}

/** One request against any endpoint, with the targets of this batch. */
export function fuzzRequest(t: Targets): fc.Arbitrary<FuzzRequest> {
  const arbs = endpoints(t).map((e) => {
    const body = e.body === "none" ? fc.oneof({ arbitrary: fc.constant({ body: null, type: "" }), weight: 9 }, { arbitrary: octetBody(16), weight: 1 })
      : "json" in e.body ? jsonBody(e.body.json) : octetBody(e.body.octet);
    return fc.record({
      e: fc.constant(e), path: e.path, tok: token(t, e.token), style: fc.nat(), body, extra: e.headers ?? fc.constant({}),
      headerNoise: rarely(fc.tuple(fc.constantFrom("x-deltaci-attempt", "content-length", "transfer-encoding", "expect", "content-encoding", "upload-offset"), evilString), 10),
      slow: rarely(fc.tuple(fc.integer({ min: 2, max: 4 }), fc.integer({ min: 20, max: 150 })), 100),
      lie: fc.nat({ max: 49 }).map((n) => n === 0),
    }).map(({ e: ep, path, tok, style, body, extra, headerNoise, slow, lie }): FuzzRequest => {
      const headers: Record<string, string> = { ...authorization(tok, style), ...extra };
      if (body.type !== "") headers["content-type"] = body.type;
      if (headerNoise) headers[headerNoise[0]] = headerNoise[1];
      return { endpoint: ep.endpoint, method: ep.method, path, headers, body: body.body, slowPieces: body.body && slow ? slow[0] : 1, slowDelayMs: slow ? slow[1] : 0, lieLength: lie && body.body !== null };
    });
  });
  return fc.oneof(...arbs);
}
