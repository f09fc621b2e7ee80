/**
 * The job's only way out when its network is an allowlist: an HTTP proxy (CONNECT, and plain
 * `GET http://…`) on a unix socket in the job dir. The container's init forwards 127.0.0.1:3128
 * to it; the job's netns has nothing but loopback, so tools that ignore HTTP(S)_PROXY get nowhere.
 * Each decision is appended to the audit log as a JSON line. Loopback, link-local and unspecified
 * addresses are refused unless the allowlist names that address (or `localhost`) literally.
 */
import { createWriteStream, type WriteStream } from "node:fs";
import { chmod, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { isIP, createConnection, createServer, type Server, type Socket } from "node:net";
import type { SandboxLogger } from "../types.ts";

export type ResolveHost = (host: string) => Promise<string[]>;

/**
 * node:dns/promises loaded on first need: most runner hosts never resolve a name. Not `import()`:
 * the bundles run from a V8 code cache, where a dynamic import fails.
 */
const lazyRequire = createRequire(import.meta.url);

export const defaultResolve: ResolveHost = async (host) =>
  (await (lazyRequire("node:dns/promises") as typeof import("node:dns/promises")).lookup(host, { all: true })).map((a) => a.address);

export interface AuditEntry {
  time: string;
  job: string;
  destination: string;
  port: number;
  decision: "allowed" | "denied";
  reason?: string;
  address?: string;
  /** `transparent` when the job's TCP was redirected (transparent-egress.ts); absent for the proxy. */
  via?: "transparent";
}

export interface EgressProxyOptions {
  socketPath: string;
  jobId: string;
  allow: string[];
  auditLogPath: string | null;
  resolve: ResolveHost;
  logger: SandboxLogger;
  connectTimeoutMs?: number;
  /** A request header must arrive within this (default 10 s); then the connection is dropped. */
  headerTimeoutMs?: number;
}

/** Per job: connections at once, and the largest request header. A job cannot use the proxy to exhaust the runner. */
export const PROXY_MAX_CONNECTIONS = 256;
const MAX_HEADER_BYTES = 8 * 1024;

/** `host[:port]` or `*.domain[:port]` (any depth of subdomain, not the apex); no port means any. */
export function allowMatch(patterns: string[], host: string, port: number): string | null {
  const h = host.toLowerCase().replace(/\.$/, "");
  for (const p of patterns) {
    const m = /^(.*?)(?::(\d{1,5}))?$/.exec(p.toLowerCase());
    const ph = m?.[1] ?? "";
    if (m?.[2] !== undefined && Number(m[2]) !== port) continue;
    if (ph.startsWith("*.") ? h.endsWith(ph.slice(1)) && h.length > ph.length - 1 : h === ph) return p;
  }
  return null;
}

export function isInternalAddress(addr: string): boolean {
  const a = addr.toLowerCase().replace(/^::ffff:/, "");
  if (isIP(a) === 4) return /^(127\.|0\.|169\.254\.)/.test(a);
  return a === "::1" || a === "::" || /^fe[89ab][0-9a-f]:/.test(a);
}

function parseTarget(line: string): { method: string; host: string; port: number; path: string; version: string } | null {
  const [method, target, version] = line.split(" ");
  if (!method || !target || !version) return null;
  if (method === "CONNECT") {
    const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(target);
    return m?.[1] && m[2] ? { method, host: m[1], port: Number(m[2]), path: "", version } : null;
  }
  try {
    const u = new URL(target);
    if (u.protocol !== "http:") return null;
    return { method, host: u.hostname.replace(/^\[|\]$/g, ""), port: Number(u.port || 80), path: `${u.pathname}${u.search}`, version };
  } catch {
    return null;
  }
}

export class EgressProxy {
  private readonly sockets = new Set<Socket>();
  private audit: WriteStream | null;

  private constructor(
    private readonly server: Server,
    private readonly opts: EgressProxyOptions,
  ) {
    this.audit = opts.auditLogPath === null ? null : createWriteStream(opts.auditLogPath, { flags: "a" });
    this.audit?.on("error", (e) => opts.logger.warn({ err: e.message }, "cannot write the egress audit log"));
  }

  static async start(opts: EgressProxyOptions): Promise<EgressProxy> {
    await rm(opts.socketPath, { force: true });
    const server = createServer();
    server.maxConnections = PROXY_MAX_CONNECTIONS;
    const proxy = new EgressProxy(server, opts);
    server.on("connection", (s) => proxy.handle(s));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(opts.socketPath, () => resolve());
    });
    await chmod(opts.socketPath, 0o666);
    return proxy;
  }

  record(e: Omit<AuditEntry, "time" | "job">): void {
    const entry: AuditEntry = { time: new Date().toISOString(), job: this.opts.jobId, ...e };
    this.audit?.write(JSON.stringify(entry) + "\n");
  }

  private handle(client: Socket): void {
    this.sockets.add(client);
    client.on("close", () => this.sockets.delete(client));
    client.on("error", () => client.destroy());
    client.setTimeout(this.opts.headerTimeoutMs ?? 10_000, () => client.destroy());
    let head = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      head = Buffer.concat([head, d]);
      const end = head.indexOf("\r\n\r\n");
      if (end === -1) {
        if (head.length > MAX_HEADER_BYTES) {
          client.off("data", onData);
          this.refuse(client, "431 Request Header Fields Too Large", "deltaci: request header too large\n");
        }
        return;
      }
      client.setTimeout(0);
      client.off("data", onData);
      client.pause();
      void this.route(client, head.subarray(0, end).toString("latin1"), head.subarray(end + 4));
    };
    client.on("data", onData);
  }

  /** Answers and drops the connection: nothing the job sent after its request is kept (not even passed fds). */
  private refuse(client: Socket, status: string, text: string): void {
    client.end(`HTTP/1.1 ${status}\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`, () => client.destroy());
  }

  private async route(client: Socket, header: string, rest: Buffer): Promise<void> {
    const lines = header.split("\r\n");
    const t = parseTarget(lines[0] ?? "");
    if (t === null) return this.refuse(client, "400 Bad Request", "deltaci: only CONNECT host:port and absolute http:// requests are proxied\n");
    const r = await this.open(t.host, t.port);
    if (r === "not in allowlist") return this.refuse(client, "403 Forbidden", `deltaci: egress to ${t.host}:${t.port} is not in the job's allowlist\n`);
    if (typeof r === "string" && r.startsWith("connect failed: ")) return this.refuse(client, "502 Bad Gateway", `deltaci: cannot connect to ${t.host}:${t.port}: ${r.slice(16)}\n`);
    if (typeof r === "string") return this.refuse(client, "403 Forbidden", `deltaci: ${t.host} resolves to no address the job may reach\n`);
    if (t.method === "CONNECT") client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
    else {
      const headers = lines.slice(1).filter((l) => !/^(proxy-connection|connection|keep-alive):/i.test(l));
      r.write(`${t.method} ${t.path} ${t.version}\r\n${[...headers, "Connection: close"].join("\r\n")}\r\n\r\n`);
    }
    this.splice(client, r, rest);
  }

  /** Joins the job's connection to an opened upstream; `rest` is what the job sent past what was read. */
  splice(client: Socket, upstream: Socket, rest: Buffer): void {
    this.sockets.add(client);
    client.on("close", () => this.sockets.delete(client));
    upstream.on("error", () => client.destroy());
    client.on("error", () => upstream.destroy());
    if (rest.length > 0) upstream.write(rest);
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
  }

  /**
   * The one decision of both paths (proxy and transparent): match `host:port` against the
   * allowlist, resolve, refuse internal addresses, connect. Audited either way. Returns the
   * connected upstream, or the refusal's reason.
   */
  async open(host: string, port: number, via: "proxy" | "transparent" = "proxy"): Promise<Socket | string> {
    const tag = via === "proxy" ? {} : { via };
    const matched = allowMatch(this.opts.allow, host, port);
    if (matched === null) {
      this.record({ destination: host, port, decision: "denied", reason: "not in allowlist", ...tag });
      return "not in allowlist";
    }
    const literal = matched.replace(/:\d+$/, "").toLowerCase();
    let addresses: string[];
    try {
      addresses = isIP(host) ? [host] : await this.opts.resolve(host);
    } catch {
      addresses = [];
    }
    const usable = addresses.filter((a) => !isInternalAddress(a) || literal === a || literal === "localhost");
    const address = usable[0];
    if (address === undefined) {
      const reason = addresses.length ? "internal address" : "cannot resolve";
      this.record({ destination: host, port, decision: "denied", reason, ...tag });
      return reason;
    }
    const upstream = createConnection({ host: address, port, timeout: this.opts.connectTimeoutMs ?? 10_000 });
    this.sockets.add(upstream);
    upstream.on("close", () => this.sockets.delete(upstream));
    upstream.once("timeout", () => upstream.destroy(new Error("connect timeout")));
    return new Promise((resolve) => {
      const onError = (e: Error) => {
        const reason = `connect failed: ${e.message}`;
        this.record({ destination: host, port, decision: "denied", reason, address, ...tag });
        resolve(reason);
      };
      upstream.once("error", onError);
      upstream.once("connect", () => {
        upstream.off("error", onError);
        upstream.setTimeout(0);
        this.record({ destination: host, port, decision: "allowed", address, ...tag });
        resolve(upstream);
      });
    });
  }

  /** Records a refusal decided before any name or address could be matched (transparent path). */
  deny(destination: string, port: number, reason: string): void {
    this.record({ destination, port, decision: "denied", reason, via: "transparent" });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    const audit = this.audit;
    this.audit = null;
    if (audit) await new Promise<void>((resolve) => audit.end(() => resolve()));
    await rm(this.opts.socketPath, { force: true });
  }
}
