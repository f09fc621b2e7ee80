/**
 * Shared set-up for the controller's end-to-end tests: a real server on loopback in a temp dir,
 * job submission and waiting through the real job API, and cleanup of every process the test
 * started (found by pid: runners are found through the controller's slot state and by their
 * command line naming the test's own temp dir).
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino, type Logger } from "pino";
import { HttpClient } from "../src/client/http.ts";
import { startServer, type RunningServer, type ServerOptions } from "../src/server/index.ts";
import type { JobStatus, SubmittedJobSpec } from "../src/protocol/schemas.ts";
import { TERMINAL_JOB_STATES } from "../src/protocol/schemas.ts";

export interface Harness {
  dir: string;
  workRoot: string;
  server: RunningServer;
  api: HttpClient;
  logger: Logger;
  tokenFile: string;
  submit(spec: Partial<SubmittedJobSpec> & { steps: SubmittedJobSpec["steps"] }): Promise<string>;
  job(id: string): Promise<JobStatus>;
  waitJob(id: string, until?: (j: JobStatus) => boolean, timeoutMs?: number): Promise<JobStatus>;
  waitFor<T>(what: string, probe: () => Promise<T | null | undefined | false> | T | null | undefined | false, timeoutMs?: number): Promise<T>;
  restartServer(): Promise<void>;
  cleanup(): Promise<void>;
}

export function jobSpec(o: Partial<SubmittedJobSpec> & { steps: SubmittedJobSpec["steps"] }): SubmittedJobSpec {
  return {
    name: "job", runsOn: { labels: [] }, image: { kind: "host" }, env: {},
    limits: { timeoutMs: 120_000, cpus: 1, memoryMiB: 256, diskMiB: 256, pids: 256, logMiB: 8 },
    network: { egress: "none" }, source: { kind: "none" }, caches: [], artifacts: [], ...o,
  };
}

export async function startHarness(serverOpts: Partial<ServerOptions> = {}): Promise<Harness> {
  const dir = await mkdtemp(join(tmpdir(), "dci-ctl-"));
  const logger = pino({ level: process.env.DCI_TEST_LOG ?? "silent" }, pino.destination(2));
  const opts: ServerOptions = { dataDir: join(dir, "server"), port: 0, durability: "normal", ...serverOpts };
  let server = await startServer(opts);
  const api = new HttpClient(server.url, { timeoutMs: 30_000 });
  const tokenFile = join(dir, "controller-token");
  await writeFile(tokenFile, server.controllerToken, { mode: 0o600 });
  const h: Harness = {
    dir, workRoot: join(dir, "runners"), server, api, logger, tokenFile,
    async submit(o) {
      const res = await api.call<{ jobId: string }>({ method: "POST", path: "/v1/jobs", token: server.apiToken, json: { spec: jobSpec(o), fork: false } });
      return res.body.jobId;
    },
    async job(id) {
      return (await api.call<JobStatus>({ method: "GET", path: `/v1/jobs/${id}`, token: server.apiToken })).body;
    },
    async waitJob(id, until = (j) => TERMINAL_JOB_STATES.includes(j.state), timeoutMs = 90_000) {
      return h.waitFor(`job ${id}`, async () => {
        const j = await h.job(id);
        return until(j) ? j : null;
      }, timeoutMs);
    },
    async waitFor(what, probe, timeoutMs = 90_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const v = await probe();
        if (v !== null && v !== undefined && v !== false) return v;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async restartServer() {
      await server.close();
      server = await startServer({ ...opts, port: Number(new URL(server.url).port), apiToken: server.apiToken, controllerToken: server.controllerToken });
      h.server = server;
    },
    async cleanup() {
      for (const pid of await processesOf(dir)) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {}
      }
      await api.destroy().catch(() => {});
      await server.close().catch(() => {});
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    },
  };
  return h;
}

/** Pids of processes whose command line names `dir` (runners and controllers this test started). */
export async function processesOf(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmd = await readFile(`/proc/${name}/cmdline`, "utf8");
      if (cmd.split("\0").some((a) => a.startsWith(dir))) pids.push(Number(name));
    } catch {}
  }
  return pids;
}

/** Alive (non-zombie) check for a pid. */
export async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    return !/^\S+ \(.*\) [ZX]/.test(stat);
  } catch {
    return false;
  }
}
