/**
 * The one HTTP transport of every Delta CI client: undici with keep-alive, a bearer token,
 * a hard timeout on every request, and typed errors (`DeltaError` with the server's code,
 * `details.status`, and any extra fields of the error body such as `committed`).
 * Retries are not done here: they live in one policy object (retry-policy.ts).
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

export class HttpClient {
  readonly baseUrl: string;
  private readonly agent: Agent;
  private readonly defaultTimeoutMs: number;

  constructor(baseUrl: string, opts: { timeoutMs: number; connections?: number }) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.defaultTimeoutMs = opts.timeoutMs;
    this.agent = new Agent({ keepAliveTimeout: 30_000, connections: opts.connections ?? 8, connectTimeout: Math.min(opts.timeoutMs, 10_000) });
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
    const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    let body = opts.body;
    if (opts.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(opts.json);
    }
    let res: Dispatcher.ResponseData;
    try {
      res = await request(this.baseUrl + opts.path, {
        method: opts.method, headers, body: (body ?? null) as Dispatcher.DispatchOptions["body"] & {}, signal, dispatcher: this.agent,
        headersTimeout: timeoutMs, bodyTimeout: timeoutMs,
      });
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      const code = timeout.aborted ? "E_TIMEOUT" : "E_NETWORK";
      throw new DeltaError(code, `${opts.method} ${opts.path}: ${timeout.aborted ? `no answer within ${timeoutMs} ms` : (err as Error).message}`, { cause: err });
    }
    if ((res.statusCode >= 200 && res.statusCode < 300) || opts.expect?.includes(res.statusCode)) return res;
    const text = await res.body.text().catch(() => "");
    let parsed: { error?: { code?: string; message?: string } & Record<string, unknown> } = {};
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch {}
    const { code = `E_HTTP_${res.statusCode}`, message = text.slice(0, 200) || `HTTP ${res.statusCode}`, ...extra } = parsed.error ?? {};
    throw new DeltaError(code, `${opts.method} ${opts.path}: ${message}`, { details: { status: res.statusCode, ...extra } });
  }

  async close(): Promise<void> {
    await this.agent.close();
  }

  /** Drops open connections at once (a runner that must exit now). */
  async destroy(): Promise<void> {
    await this.agent.destroy();
  }
}
