/**
 * The protocol fuzzer's world: a real server on loopback with jobs in every interesting state and
 * tokens of every kind (valid, wrong kind, used, expired, stale, of another attempt), plus a
 * snapshot of everything a request could change, read over the API and from the blob directories.
 */
import { createHash } from "node:crypto";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { request } from "undici";
import { newToken } from "../../../src/base/ids.ts";
import { capabilities, startTestServer, type TestServer } from "../../server-harness.ts";

/** The lease of one attempt the fuzzer aims at, with what it has committed. */
export interface LiveAttempt {
  jobId: string;
  leaseToken: string;
  artifactId: string;
  logBytes: number;
}

/** Tokens and ids the request generators pick from (a fresh copy per batch). */
export interface Targets {
  apiToken: string;
  controllerToken: string;
  registration: string[];
  session: string[];
  live: LiveAttempt[];
  /** Tokens that must be refused wherever they are sent. */
  dead: string[];
  jobIds: string[];
  artifactNames: string[];
}

const FUZZ_SERVER = {
  leaseTtlMs: 3_600_000, leaseWaitMaxMs: 200, leaseWaitDefaultMs: 100, sweepIntervalMs: 1000,
  jsonBodyLimitBytes: 64 * 1024, logChunkLimitBytes: 256 * 1024, sourceMaxBytes: 1024 * 1024, durability: "normal" as const,
};
/** Live attempts kept for the fuzzer to aim at (refilled between batches). */
const LIVE_ATTEMPTS = 2;
const FRESH_REGISTRATIONS = 2;

export class FuzzWorld {
  private readonly regs: string[] = [];
  private readonly sessions: string[] = [];
  private readonly live: LiveAttempt[] = [];
  private readonly dead: string[] = [];
  private readonly jobIds: string[] = [];
  private cookie = "";

  private constructor(readonly srv: TestServer) {}

  static async start(): Promise<FuzzWorld> {
    const w = new FuzzWorld(await startTestServer(FUZZ_SERVER));
    try {
      await w.setUp();
      return w;
    } catch (err) {
      await w.close();
      throw err;
    }
  }

  get url(): string {
    return this.srv.url;
  }

  private async setUp(): Promise<void> {
    const s = this.srv;
    const signIn = await s.call("POST", "/web/session", { json: { token: s.srv.apiToken } });
    this.cookie = String(signIn.headers["set-cookie"] ?? "").split(";")[0] ?? "";
    // Expired (1 s ttl, waited out below), used, and well-formed but unknown tokens of every kind.
    const expiring = await s.ctl("POST", "/v1/controller/registrations", { count: 1, labels: [], ttlMs: 1000 });
    this.dead.push(String(expiring.body.tokens[0]));
    const used = await s.ctl("POST", "/v1/controller/registrations", { count: 1, labels: [] });
    await s.call("POST", "/v1/runner/register", { token: used.body.tokens[0], json: { name: "used", version: "1", capabilities: capabilities() } });
    this.dead.push(String(used.body.tokens[0]));
    for (const kind of ["registration", "session", "lease", "controller", "api"] as const) this.dead.push(newToken(kind));
    // A finished attempt: its lease token is stale; its job id stays a target.
    const session = await s.runner();
    this.sessions.push(session);
    await s.submit();
    const done = await s.lease(session);
    if (!done) throw new Error("fuzz world: no lease for the finished job");
    await s.complete(done.leaseToken);
    this.dead.push(done.leaseToken);
    this.jobIds.push(done.jobId);
    await s.submit({ runsOn: { labels: ["nowhere"] } }).then((id) => this.jobIds.push(id));
    await this.refill();
    await new Promise((r) => setTimeout(r, 1100));
  }

  /** Tops up unused registration tokens and live attempts after a batch used some up. */
  async refill(): Promise<void> {
    const s = this.srv;
    const regs = await s.ctl("POST", "/v1/controller/registrations", { count: FRESH_REGISTRATIONS, labels: [] });
    this.regs.splice(0, this.regs.length, ...(regs.body.tokens as string[]));
    for (let i = this.live.length - 1; i >= 0; i--) {
      const a = this.live[i];
      if (a && !(await this.isLive(a))) {
        this.dead.push(a.leaseToken);
        this.live.splice(i, 1);
      }
    }
    while (this.live.length < LIVE_ATTEMPTS) this.live.push(await this.newLive());
  }

  private async isLive(a: LiveAttempt): Promise<boolean> {
    const r = await this.srv.heartbeat(a.leaseToken, { logBytes: a.logBytes });
    return r.status === 200 && r.body.cancel === "none";
  }

  private async newLive(): Promise<LiveAttempt> {
    const s = this.srv;
    // A label of its own, so this runner leases this job and not one the fuzzer submitted.
    const label = `fuzz-live-${this.jobIds.length}`;
    const jobId = await s.submit({ name: "fuzz-live", runsOn: { labels: [label] }, artifacts: [{ name: "out", paths: ["out.bin"], when: "always" }] });
    this.jobIds.push(jobId);
    // A job the fuzzer submitted with no label requirement matches any runner: finish those first
    // (a runner session leases once: a fresh runner for each try).
    const leaseOnce = async () => {
      const session = await s.runner({ labels: [label] });
      this.sessions.push(session);
      return s.lease(session);
    };
    let l = await leaseOnce();
    for (let i = 0; l && l.jobId !== jobId && i < 100; i++) {
      await s.complete(l.leaseToken, { result: "failed", exitCode: 1 });
      l = await leaseOnce();
    }
    if (l?.jobId !== jobId) throw new Error(`fuzz world: leased ${l?.jobId ?? "nothing"}, not ${jobId}`);
    const log = Buffer.from("fuzz log line\n");
    const put = await s.log(l.leaseToken, 0, log);
    if (put.status !== 202) throw new Error(`fuzz world: log append ${put.status}`);
    const data = Buffer.from("artifact bytes");
    const sha256 = createHash("sha256").update(data).digest("hex");
    const art = await s.call("POST", "/v1/runner/artifacts", { token: l.leaseToken, json: { name: "out", size: data.length, sha256 } });
    if (art.status !== 201) throw new Error(`fuzz world: artifact ${art.status}`);
    // Running, as a live runner's attempt is: a fuzzed heartbeat that is accepted then changes nothing the snapshot holds.
    const hb = await s.heartbeat(l.leaseToken, { state: "running", logBytes: log.length });
    if (hb.status !== 200) throw new Error(`fuzz world: heartbeat ${hb.status}`);
    return { jobId, leaseToken: l.leaseToken, artifactId: String(art.body.artifactId), logBytes: log.length };
  }

  targets(): Targets {
    return {
      apiToken: this.srv.srv.apiToken, controllerToken: this.srv.srv.controllerToken, registration: [...this.regs],
      session: [...this.sessions], live: this.live.map((a) => ({ ...a })), dead: [...this.dead], jobIds: [...this.jobIds], artifactNames: ["out"],
    };
  }

  /** Everything a request may change, as one comparable string. */
  async snapshot(): Promise<string> {
    const s = this.srv;
    const jobs = await s.api("GET", "/v1/jobs?limit=1000");
    if (jobs.status !== 200) throw new Error(`snapshot: jobs ${jobs.status}`);
    const logs: Record<string, string> = {};
    for (const j of jobs.body.jobs as Array<{ jobId: string; attempts: Array<{ attempt: number }> }>) {
      for (const a of j.attempts) {
        const r = await s.api("GET", `/v1/jobs/${j.jobId}/log?attempt=${a.attempt}`);
        logs[`${j.jobId}/${a.attempt}`] = `${r.status}:${createHash("sha256").update(r.raw).digest("hex")}`;
      }
    }
    const uploads: Record<string, unknown> = {};
    for (const a of this.live) uploads[a.artifactId] = (await s.call("GET", `/v1/runner/artifacts/${a.artifactId}/content`, { token: a.leaseToken })).body;
    const fleet = await s.call("GET", "/web/api/fleet", { headers: { cookie: this.cookie } });
    if (fleet.status !== 200) throw new Error(`snapshot: fleet ${fleet.status}`);
    const { history: _history, ...fleetState } = fleet.body as Record<string, unknown>;
    const files: Record<string, string[]> = {};
    for (const d of ["cas", "uploads", "tmp"]) files[d] = await listTree(join(s.dir, d));
    return JSON.stringify({ jobs: jobs.body, logs, uploads, fleet: fleetState, files });
  }

  /** `/healthz` with a deadline; false when it does not answer 200 in time. */
  async healthy(timeoutMs: number): Promise<boolean> {
    try {
      const r = await request(`${this.url}/healthz`, { signal: AbortSignal.timeout(timeoutMs) });
      await r.body.dump();
      return r.statusCode === 200;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    await this.srv.close();
  }
}

/** Relative paths and sizes of every file under `dir` (none when it does not exist). */
async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    if (!e.isFile()) continue;
    const p = join(e.parentPath, e.name);
    out.push(`${p.slice(dir.length)}:${(await stat(p).catch(() => ({ size: -1 }))).size}`);
  }
  return out.sort();
}
