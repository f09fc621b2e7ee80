/** Shared helpers of the protocol benchmarks: child servers, a keep-alive client, percentiles. */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent, request } from "undici";
import { waitForReadyUrl } from "../../test/support/ready-url.ts";

export const ROOT = join(import.meta.dirname, "..", "..");

export interface Child {
  url: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

function stopper(proc: ChildProcess, after?: () => Promise<void>): () => Promise<void> {
  return async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise<void>((r) => proc.once("exit", () => r()));
      proc.kill("SIGTERM");
      await exited;
    }
    await after?.();
  };
}

/**
 * Extra node flags for the `deltaci server` children, from DELTACI_BENCH_SERVER_NODE_ARGS
 * (space-separated), e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile the server under load.
 */
const serverNodeArgs = (process.env.DELTACI_BENCH_SERVER_NODE_ARGS ?? "").split(" ").filter((a) => a !== "");

export async function spawnDeltaci(args: string[] = []): Promise<Child & { apiToken: string; controllerToken: string }> {
  const dir = await mkdtemp(join(tmpdir(), "deltaci-bench-"));
  const proc = spawn(process.execPath, [...serverNodeArgs, join(ROOT, "bin", "deltaci.js"), "server", "--listen", "127.0.0.1:0", "--data-dir", dir, "--log-level", "warn", ...args], {
    cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, DELTACI_API_TOKEN: "", DELTACI_CONTROLLER_TOKEN: "" },
  });
  const url = await waitForReadyUrl(proc);
  const apiToken = (await readFile(join(dir, "api-token"), "utf8")).trim();
  const controllerToken = (await readFile(join(dir, "controller-token"), "utf8")).trim();
  return { url, proc, apiToken, controllerToken, stop: stopper(proc, () => rm(dir, { recursive: true, force: true })) };
}

/** A `deltaci server` replica on PostgreSQL `databaseUrl`, with the given shared tokens. */
export async function spawnDeltaciPg(databaseUrl: string, tokens: { apiToken: string; controllerToken: string }, args: string[] = []): Promise<Child & { apiToken: string; controllerToken: string }> {
  const dir = await mkdtemp(join(tmpdir(), "deltaci-bench-"));
  const proc = spawn(process.execPath, [...serverNodeArgs, join(ROOT, "bin", "deltaci.js"), "server", "--listen", "127.0.0.1:0", "--data-dir", dir, "--database", databaseUrl, "--log-level", "warn", ...args], {
    cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, DELTACI_API_TOKEN: tokens.apiToken, DELTACI_CONTROLLER_TOKEN: tokens.controllerToken },
  });
  const url = await waitForReadyUrl(proc).catch(async (err: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw err;
  });
  return { url, proc, ...tokens, stop: stopper(proc, () => rm(dir, { recursive: true, force: true })) };
}

export async function spawnBare(): Promise<Child> {
  const proc = spawn(process.execPath, ["--import", "tsx", join(ROOT, "bench", "lib", "bare-fastify.ts")], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  const url = await waitForReadyUrl(proc);
  return { url, proc, stop: stopper(proc) };
}

/** Response bodies are read loosely in benchmarks. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

export class Client {
  readonly agent: Agent;
  constructor(readonly base: string, connections = 64) {
    this.agent = new Agent({ connections, keepAliveTimeout: 60_000, pipelining: 1 });
  }

  async call(method: string, path: string, token: string | null, opts: { json?: unknown; body?: Buffer; headers?: Record<string, string> } = {}): Promise<{ status: number; body: Json }> {
    const headers: Record<string, string> = { ...opts.headers };
    if (token) headers.authorization = `Bearer ${token}`;
    let body: string | Buffer | null = opts.body ?? null;
    if (opts.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(opts.json);
    }
    const res = await request(this.base + path, { method: method as "GET", headers, body, dispatcher: this.agent, headersTimeout: 120_000, bodyTimeout: 120_000 });
    const text = await res.body.text();
    return { status: res.statusCode, body: text.length > 0 && String(res.headers["content-type"]).includes("json") ? JSON.parse(text) : text };
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] as number;
}

export function summary(values: number[]): { n: number; p50: number; p90: number; p99: number; max: number; mean: number } {
  const s = [...values].sort((a, b) => a - b);
  const r = (x: number) => Math.round(x * 1000) / 1000;
  return { n: s.length, p50: r(percentile(s, 50)), p90: r(percentile(s, 90)), p99: r(percentile(s, 99)), max: r(s.at(-1) ?? NaN), mean: r(s.reduce((a, b) => a + b, 0) / Math.max(1, s.length)) };
}

export const jobSpec = (name = "bench") => ({
  name, runsOn: { labels: ["linux"] }, image: { kind: "host" }, steps: [{ name: "s", run: "true" }], env: {},
  limits: { timeoutMs: 60_000, cpus: 1, memoryMiB: 512, diskMiB: 1024, pids: 256, logMiB: 64 },
  network: { egress: "none" }, source: { kind: "none" }, caches: [], artifacts: [],
});

export const capabilities = { os: "linux", arch: "x64", labels: ["linux"], toolchains: {}, resources: { cpus: 4, memoryMiB: 8192, diskMiB: 16384 }, isolation: ["oci"] };

/** `n` registered runner sessions. */
export async function sessions(c: Client, controllerToken: string, n: number): Promise<string[]> {
  const out: string[] = [];
  while (out.length < n) {
    const count = Math.min(256, n - out.length);
    const reg = await c.call("POST", "/v1/controller/registrations", controllerToken, { json: { count, labels: [] } });
    const made = await Promise.all((reg.body.tokens as string[]).map(async (t) => {
      const r = await c.call("POST", "/v1/runner/register", t, { json: { name: "bench", version: "1", capabilities } });
      return r.body.sessionToken as string;
    }));
    out.push(...made);
  }
  return out;
}

/** CPU time (user + system, ms) a process has used so far, from /proc (Linux). */
export function processCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1000) / 100;
}
