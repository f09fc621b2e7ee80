/**
 * For the web view's browser tests: a real `deltaci up` (server + controller + runners with
 * `--isolation process`) on loopback in a temp dir, the web assets freshly built, and the job
 * API at hand to submit and watch jobs. `close()` stops `up` by its pid, then kills by pid any
 * process still naming the temp dir, and removes the dir.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildWeb } from "../../scripts/build-web.mjs";
import type { JobStatus, SubmittedJobSpec } from "../../src/protocol/schemas.ts";
import { TERMINAL_JOB_STATES } from "../../src/protocol/schemas.ts";
import { startCli, type CliRun } from "../cli-helpers.ts";
import { jobSpec, processesOf } from "../controller-harness.ts";

export interface WebStack {
  dir: string;
  url: string;
  token: string;
  submit(o: Partial<SubmittedJobSpec> & { steps: SubmittedJobSpec["steps"] }): Promise<string>;
  job(id: string): Promise<JobStatus>;
  waitJob(id: string, until?: (j: JobStatus) => boolean, timeoutMs?: number): Promise<JobStatus>;
  close(): Promise<void>;
}

export async function startWebStack(maxRunners = 2): Promise<WebStack> {
  await buildWeb();
  const dir = await mkdtemp(join(tmpdir(), "dci-web-"));
  const slotBase = 30_000 + Math.floor(Math.random() * 20_000);
  const run: CliRun = startCli([
    "up", "--isolation", "process", "--listen", "127.0.0.1:0", "--data-dir", join(dir, "server"), "--work-root", join(dir, "runners"),
    "--max-runners", String(maxRunners), "--min-idle", "0", "--slot-base", String(slotBase), "--log-level", "warn",
  ], { cwd: dir, timeoutMs: 30 * 60_000 });
  const close = async () => {
    if (run.child.exitCode === null && run.child.signalCode === null) {
      run.child.kill("SIGTERM");
      await Promise.race([run.result, new Promise((r) => setTimeout(r, 20_000))]);
    }
    if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill("SIGKILL");
    for (const pid of await processesOf(dir)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    }
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  };
  try {
    await run.waitFor(/server ready at (http:\/\/\S+)/, 60_000);
  } catch (err) {
    await close();
    throw err;
  }
  const url = /server ready at (http:\/\/\S+)/.exec(run.output())?.[1] ?? "";
  const token = (await readFile(join(dir, "server", "api-token"), "utf8")).trim();
  const call = async <T>(method: string, path: string, json?: unknown): Promise<T> => {
    const r = await fetch(url + path, {
      method, headers: { authorization: `Bearer ${token}`, ...(json === undefined ? {} : { "content-type": "application/json" }) },
      ...(json === undefined ? {} : { body: JSON.stringify(json) }),
    });
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
    return (await r.json()) as T;
  };
  const stack: WebStack = {
    dir, url, token, close,
    async submit(o) {
      return (await call<{ jobId: string }>("POST", "/v1/jobs", { spec: jobSpec(o), fork: false })).jobId;
    },
    job: (id) => call<JobStatus>("GET", `/v1/jobs/${id}`),
    async waitJob(id, until = (j) => TERMINAL_JOB_STATES.includes(j.state), timeoutMs = 120_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const j = await stack.job(id);
        if (until(j)) return j;
        if (Date.now() > deadline) throw new Error(`timed out waiting for job ${id} (state ${j.state})`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };
  return stack;
}
