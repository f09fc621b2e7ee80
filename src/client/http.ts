/**
 * The one HTTP transport of every Delta CI client: undici with keep-alive, a bearer token,
 * a hard timeout on every request, and typed errors (`DeltaError` with the server's code,
 * `details.status`, and any extra fields of the error body such as `committed`).
 * Retries are not done here: they live in one policy object (retry-policy.ts).
 * Several server replicas (`http://a:8181,http://b:8181`): requests go to one until it fails to
 * answer (network error, timeout, 502/503/504), then to the next; the retry policy re-sends.
 */
import { Agent, request, type Dispatcher } from "undici";
import { DeltaError } from "../base/errors.ts";

export interface HttpResponse<T> {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: T;
}

export interface RequestOptions {
  method: Dispatcher.HttpMethod;
  path: string;
  token?: string | null;
  json?: unknown;
  body?: Buffer | Uint8Array | NodeJS.ReadableStream | string;
  headers?: Record<string, string>;
  timeoutMs?: number;
  signal?: AbortSignal | undefined;
  /** Statuses returned as values rather than thrown (e.g. 204, 416). 2xx are always values. */
  expect?: number[];
}

/** The servers of a `,`-separated list, without trailing slashes; throws unless each is http(s). */
export function serverUrls(list: string): string[] {
  const urls = list.split(",").map((u) => u.trim().replace(/\/+$/, "")).filter((u) => u.length > 0);
  const bad = urls.find((u) => !/^https?:\/\/[^\s/,]+(\/[^\s,]*)?$/.test(u));
  if (urls.length === 0 || bad !== undefined) throw new DeltaError("E_INVALID", `a server must be an http(s) URL (several: comma-separated), got ${JSON.stringify(bad ?? list)}`);
  return urls;
}

/** Statuses a load balancer or a stopping replica answers: the next replica may serve. */
const FAILOVER_STATUS = new Set([502, 503, 504]);

const KEEP_ALIVE_MS = 30_000;

/**
 * Keep-alive connections shared by several clients (a runner host's sessions), so that each one
 * does not set up its own agent and TCP connections. It carries no credential: a token is a header
 * of each request, and a connection holds nothing of a request once it is answered. Its owner
 * closes it; the clients that use it never do. No bound on connections: every session's lease
 * long poll holds one.
 */
export class ConnectionPool {
  readonly agent: Agent;

  constructor(opts: { connectTimeoutMs: number }) {
    this.agent = new Agent({ keepAliveTimeout: KEEP_ALIVE_MS, connectTimeout: opts.connectTimeoutMs });
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}

export class HttpClient {
  private readonly urls: string[];
  private current = 0;
  private readonly agent: Agent;
  /** Whether `agent` is this client's own (closed with it) or a shared pool's. */
  private readonly ownsAgent: boolean;
  /** Aborted by `destroy()`: this client's requests stop, on its own agent or a shared one. */
  private readonly destroyed = new AbortController();
  private readonly defaultTimeoutMs: number;

  constructor(baseUrl: string, opts: { timeoutMs: number; connections?: number; pool?: ConnectionPool }) {
    this.urls = serverUrls(baseUrl);
    this.defaultTimeoutMs = opts.timeoutMs;
    this.ownsAgent = opts.pool === undefined;
    this.agent = opts.pool?.agent ?? new Agent({ keepAliveTimeout: KEEP_ALIVE_MS, connections: opts.connections ?? 8, connectTimeout: Math.min(opts.timeoutMs, 10_000) });
  }

  /** The server requests go to now. */
  get baseUrl(): string {
    return this.urls[this.current] ?? "";
  }

  /** `from` failed to answer: later requests go to the next server (once per failure of `from`). */
  private failover(from: string): void {
    if (this.urls.length > 1 && this.baseUrl === from) this.current = (this.current + 1) % this.urls.length;
  }

  /** JSON in, JSON (or nothing) out. */
  async call<T>(opts: RequestOptions): Promise<HttpResponse<T>> {
    const res = await this.raw(opts);
    const text = await res.body.text();
    const body = text.length > 0 && String(res.headers["content-type"] ?? "").includes("json") ? (JSON.parse(text) as T) : (text as unknown as T);
    return { status: res.statusCode, headers: res.headers, body };
  }

  /** The raw response, for streamed bodies (logs, artifacts); the caller consumes or dumps the body. */
  async raw(opts: RequestOptions): Promise<Dispatcher.ResponseData> {
    const timeoutMs = opts.timeoutMs ?? this.defaultTimeoutMs;
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = AbortSignal.any(opts.signal ? [opts.signal, timeout, this.destroyed.signal] : [timeout, this.destroyed.signal]);
    const headers: Record<string, string> = { ...opts.headers };
    // An absolute URL is another origin (a presigned object-store URL): it never gets the token.
    const absolute = /^https?:\/\//.test(opts.path);
    if (opts.token && !absolute) headers.authorization = `Bearer ${opts.token}`;
    let body = opts.body;
    if (opts.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(opts.json);
    }
    let res: Dispatcher.ResponseData;
    const base = this.baseUrl;
    try {
      res = await request(absolute ? opts.path : base + opts.path, {
        method: opts.method, headers, body: (body ?? null) as Dispatcher.DispatchOptions["body"] & {}, signal, dispatcher: this.agent,
        headersTimeout: timeoutMs, bodyTimeout: timeoutMs,
      });
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      if (this.destroyed.signal.aborted) throw new DeltaError("E_CLOSED", `${opts.method} ${absolute ? redactQuery(opts.path) : opts.path}: the client was destroyed`, { cause: err });
      if (!absolute) this.failover(base);
      const code = timeout.aborted ? "E_TIMEOUT" : "E_NETWORK";
      throw new DeltaError(code, `${opts.method} ${absolute ? redactQuery(opts.path) : opts.path}: ${timeout.aborted ? `no answer within ${timeoutMs} ms` : (err as Error).message}`, { cause: err });
    }
    if ((res.statusCode >= 200 && res.statusCode < 300) || opts.expect?.includes(res.statusCode)) return res;
    if (FAILOVER_STATUS.has(res.statusCode) && !absolute) this.failover(base);
    const text = await res.body.text().catch(() => "");
    let parsed: { error?: { code?: string; message?: string } & Record<string, unknown> } = {};
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch {}
    const { code = `E_HTTP_${res.statusCode}`, message = text.slice(0, 200) || `HTTP ${res.statusCode}`, ...extra } = parsed.error ?? {};
    throw new DeltaError(code, `${opts.method} ${absolute ? redactQuery(opts.path) : opts.path}: ${message}`, { details: { status: res.statusCode, ...extra } });
  }

  /** Waits for this client's requests and closes its own agent (a shared pool stays open). */
  async close(): Promise<void> {
    if (this.ownsAgent) await this.agent.close();
  }

  /** Stops this client's requests at once (a runner that must exit now), and drops its own agent's connections. */
  async destroy(): Promise<void> {
    this.destroyed.abort();
    if (this.ownsAgent) await this.agent.destroy();
  }
}

/** A presigned URL without its query (its signature is a credential): for messages and logs. */
function redactQuery(url: string): string {
  const q = url.indexOf("?");
  return q < 0 ? url : `${url.slice(0, q)}?…`;
}
