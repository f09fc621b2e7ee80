/**
 * A soak of the whole fleet on this machine: `deltaci up` as a real child process, jobs whose
 * logs are known byte for byte, runner processes SIGKILLed at random and the server (with its
 * controller) SIGKILLed and restarted. Used by test/soak.test.ts (CI-sized) and bench/soak.ts
 * (long runs). The caller checks the returned outcomes; `cleanup()` removes everything even
 * after a failure.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { chmod, mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { defaultSlotReaper } from "../../src/cli/commands/controller.ts";
import { selfCommand } from "../../src/config/paths.ts";
import type { Pool } from "../../src/controller/types.ts";
import { readProcStat } from "../../src/controller/proc.ts";
import { nonceOf, parseMarker } from "../../src/logs/step-markers.ts";
import { TERMINAL_JOB_STATES, type JobStatus } from "../../src/protocol/schemas.ts";
import { jobSpec } from "../controller-harness.ts";
import { freePort, leftoversUnder, processesUnder, slotsUnder, type Leftovers } from "./fleet-leftovers.ts";

/**
 * How the controller runs runners: the extra `deltaci up` flags that select it, and which
 * processes are the runners the soak may kill (one per job today; a runner host later).
 */
export interface RunnerMode {
  name: string;
  upArgs: readonly string[];
  isRunnerProcess(argv: readonly string[]): boolean;
}

/** The subcommand of a `node [node flags] …/deltaci.js SUBCOMMAND …` command line (a host gets node flags first: RUNNER_HOST_NODE_FLAGS). */
function subcommand(argv: readonly string[]): string | undefined {
  const script = argv.findIndex((a, i) => i > 0 && !a.startsWith("-"));
  return script < 0 ? undefined : argv[script + 1];
}

/** A process per runner: `node …/deltaci.js runner …`. */
export const processRunnerMode: RunnerMode = { name: "process", upArgs: ["--runner-mode", "process"], isRunnerProcess: (argv) => subcommand(argv) === "runner" };

/** Runners as sessions in a runner host (the default): the host, `node [flags] …/deltaci.js runner-host …`, is what gets killed. */
export const sessionRunnerMode: RunnerMode = { name: "session", upArgs: ["--runner-mode", "session"], isRunnerProcess: (argv) => subcommand(argv) === "runner-host" };

export interface SoakOptions {
  isolation: "process" | "oci";
  mode: RunnerMode;
  jobs: number;
  maxRunners: number;
  minIdle: number;
  /** A random runner is SIGKILLed every [min, max) ms while jobs are unfinished. */
  killEveryMs: readonly [number, number];
  /** How many times the server (with its controller) is SIGKILLed and restarted, spread over the run. */
  serverKills: number;
  maxAttempts: number;
  leaseTtl: string;
  /** Gives up waiting for the jobs after this long. */
  timeoutMs: number;
  log?: (msg: string) => void;
}

export interface SoakJob {
  index: number;
  jobId: string;
  status: JobStatus;
  /** What the job prints, step by step (its log must hold exactly this). */
  expected: [string, string];
  /** The server's log of the job's last attempt. */
  log: string;
}

export interface SoakResult {
  jobs: SoakJob[];
  runnerKills: number;
  serverKills: number;
  /** Runners' forked children (between fork and exec) seen by the killer and spared. */
  forkedSeen: number;
  wallMs: number;
  /** What was still on the machine after `deltaci up` stopped (SIGTERM). */
  leftovers: Leftovers;
  upExitCode: number | null;
}

export interface Soak {
  dir: string;
  run(): Promise<SoakResult>;
  /** Stops and removes everything; with `keepFiles` the dir's files (logs) stay for a post-mortem. */
  cleanup(keepFiles?: boolean): Promise<void>;
}

const TOKENS = { DELTACI_API_TOKEN: randomBytes(16).toString("hex"), DELTACI_CONTROLLER_TOKEN: randomBytes(16).toString("hex") };

/** Job `i`'s two steps: lines of known text, then a short sleep and a last line. */
export function soakSteps(i: number): { steps: Array<{ name: string; run: string }>; expected: [string, string] } {
  const n = 20 + (i % 7) * 13;
  const lines = Array.from({ length: n }, (_, k) => `job ${i} line ${k + 1}\n`).join("");
  const sleep = `0.${String(100 + ((i * 37) % 800)).padStart(3, "0")}`;
  return {
    steps: [
      { name: "lines", run: `k=1; while [ $k -le ${n} ]; do echo "job ${i} line $k"; k=$((k+1)); done` },
      { name: "end", run: `sleep ${sleep}; echo "job ${i} end"` },
    ],
    expected: [lines, `job ${i} end\n`],
  };
}

export async function createSoak(o: SoakOptions): Promise<Soak> {
  const dir = await mkdtemp(join(tmpdir(), "dci-soak-"));
  await chmod(dir, 0o755); // the sandbox's mapped uids traverse to the slot dirs
  const log = o.log ?? (() => {});
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const slotBase = randomInt(30_000, 50_000); // slots select uid ranges, cgroups and names host-wide
  const workRoot = join(dir, "runners");
  const self = selfCommand();
  const upArgs = [
    ...self.args, "up", "--listen", `127.0.0.1:${port}`, "--data-dir", join(dir, "server"), "--work-root", workRoot,
    "--isolation", o.isolation, "--max-runners", String(o.maxRunners), "--min-idle", String(o.minIdle), "--slot-base", String(slotBase),
    "--lease-ttl", o.leaseTtl, "--heartbeat-interval", "500ms", "--max-attempts", String(o.maxAttempts), "--durability", "normal",
    "--runner-idle-timeout", "1m", "--idle-grace", "2s", "--log-level", "info", ...o.mode.upArgs,
  ];
  let up: ChildProcess | null = null;
  let upStarts = 0;
  let forkedSeen = 0;

  async function startUp(): Promise<void> {
    const out = await open(join(dir, `up-${++upStarts}.log`), "w");
    const child = spawn(self.command, upArgs, { cwd: dir, stdio: ["ignore", out.fd, out.fd], env: { ...process.env, ...TOKENS } });
    await out.close();
    up = child;
    const exited = new Promise<never>((_, reject) => child.once("exit", (code) => reject(new Error(`deltaci up exited (${code}) at start; see ${dir}/up-${upStarts}.log`))));
    exited.catch(() => {});
    await Promise.race([waitHealthy(url), exited]);
  }

  async function killUp(): Promise<void> {
    const child = up;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await gone;
  }

  async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
    for (let tries = 0; ; tries++) {
      try {
        const res = await fetch(url + path, {
          method, headers: { authorization: `Bearer ${TOKENS.DELTACI_API_TOKEN}`, ...(body ? { "content-type": "application/json" } : {}) },
          ...(body ? { body: JSON.stringify(body) } : {}), signal: AbortSignal.timeout(30_000),
        });
        if (res.status >= 500 || res.status === 503) throw new Error(`${method} ${path}: ${res.status}`);
        if (!res.ok) throw Object.assign(new Error(`${method} ${path}: ${res.status} ${await res.text()}`), { fatal: true });
        return (path.includes("/log") ? await res.text() : await res.json()) as T;
      } catch (err) {
        if ((err as { fatal?: boolean }).fatal || tries > 600) throw err;
        await sleep(100); // the server is being restarted
      }
    }
  }

  /**
   * SIGKILLs one runner at random. A process that a runner forked shows the runner's command
   * line until it execs (a step, crun): it is never a target, or the soak itself would kill a
   * live job's step.
   */
  async function killRandomRunner(): Promise<"killed" | "none"> {
    const found = await processesUnder(dir, (argv) => o.mode.isRunnerProcess(argv));
    const pids = new Set(found.map((p) => p.pid));
    const runners = found.filter((p) => !pids.has(p.ppid));
    forkedSeen += found.length - runners.length;
    const victim = runners[randomInt(runners.length || 1)];
    if (!victim) return "none";
    // a pid that died and was reused since it was listed is not the runner: check its start time again
    const st = await readProcStat(victim.pid);
    if (!st || st.startTime !== victim.startTime) return "none";
    try {
      process.kill(victim.pid, "SIGKILL");
      return "killed";
    } catch {
      return "none";
    }
  }

  /** False while the server is down (a server kill is under way): the next look tells. */
  async function someJobRunning(): Promise<boolean> {
    try {
      const { jobs } = await api<{ jobs: JobStatus[] }>("GET", `/v1/jobs?state=running&limit=1`);
      return jobs.length > 0;
    } catch {
      return false;
    }
  }

  return {
    dir,
    async run() {
      const started = Date.now();
      await startUp();
      const submitted: Array<{ index: number; jobId: string; expected: [string, string] }> = [];
      for (let i = 0; i < o.jobs; i++) {
        const { steps, expected } = soakSteps(i);
        const { jobId } = await api<{ jobId: string }>("POST", "/v1/jobs", { spec: jobSpec({ name: `soak-${i}`, steps }), fork: false });
        submitted.push({ index: i, jobId, expected });
      }
      log(`submitted ${o.jobs} jobs`);
      let runnerKills = 0;
      let serverKills = 0;
      let done = false;
      const killer = (async () => {
        // the first kill comes soon: warm session hosts finish a CI-sized run in a few seconds
        for (let first = true; !done; first = false) {
          await sleep(first ? randomInt(200, 1000) : randomInt(o.killEveryMs[0], o.killEveryMs[1]));
          // a kill lands while a job runs, so that every run proves a retry (not only an idle runner's loss)
          while (!done && !(await someJobRunning())) await sleep(100);
          if (!done && (await killRandomRunner()) === "killed") runnerKills++;
        }
      })();
      try {
        const deadline = started + o.timeoutMs;
        for (;;) {
          const { jobs } = await api<{ jobs: JobStatus[] }>("GET", `/v1/jobs?limit=1000`);
          const finished = jobs.filter((j) => TERMINAL_JOB_STATES.includes(j.state)).length;
          if (finished >= o.jobs) break;
          if (Date.now() > deadline) throw new Error(`soak: ${o.jobs - finished} of ${o.jobs} jobs unfinished after ${o.timeoutMs} ms (${dir})`);
          // server kills at evenly spaced fractions of the jobs finished
          if (serverKills < o.serverKills && finished >= ((serverKills + 1) * o.jobs) / (o.serverKills + 1)) {
            serverKills++;
            log(`SIGKILL of the server (${finished}/${o.jobs} jobs finished)`);
            await killUp();
            await startUp();
          }
          await sleep(200);
        }
      } finally {
        done = true;
        await killer;
      }
      const jobs: SoakJob[] = [];
      for (const s of submitted) {
        const status = await api<JobStatus>("GET", `/v1/jobs/${s.jobId}`);
        jobs.push({ ...s, status, log: await api<string>("GET", `/v1/jobs/${s.jobId}/log`) });
      }
      const wallMs = Date.now() - started;
      const upExitCode = await stopUp(up);
      return { jobs, runnerKills, serverKills, forkedSeen, wallMs, leftovers: await leftoversUnder(dir, workRoot), upExitCode };
    },
    async cleanup(keepFiles = false) {
      await killUp();
      for (const p of await processesUnder(dir, () => true)) {
        try {
          process.kill(p.pid, "SIGKILL");
        } catch {}
      }
      await reapAll(workRoot, slotBase, o.isolation);
      if (!keepFiles) await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    },
  };
}

/** SIGTERM: the controller terminates its runners and reaps their slots, then the server stops. */
async function stopUp(child: ChildProcess | null): Promise<number | null> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
  const gone = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  try {
    return await gone;
  } finally {
    clearTimeout(timer);
  }
}

/** After a failure: what a killed fleet may have left (containers, mounts, loops, cgroups), via the controller's own reaper. */
async function reapAll(workRoot: string, slotBase: number, isolation: "process" | "oci"): Promise<void> {
  const reaper = defaultSlotReaper([{ isolation } as Pool], pino({ level: "silent" }));
  for (const index of new Set([...(await slotsUnder(workRoot)), slotBase])) {
    await reaper.reap({ index, dir: join(workRoot, "controller", `slot-${index}`), workDir: join(workRoot, `slot-${index}`) }).catch(() => {});
  }
}

async function waitHealthy(url: string): Promise<void> {
  for (;;) {
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) });
      if (res.ok) return;
    } catch {}
    await sleep(50);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * What is wrong with a soak's outcome: a job that did not succeed (unless every attempt was lost
 * to the kills), a log that is not exactly the steps' output between the runner's markers,
 * anything left on the machine, an unclean stop.
 */
export function soakProblems(r: SoakResult): string[] {
  const problems: string[] = [];
  for (const j of r.jobs) {
    const s = j.status;
    const attempts = s.attempts.map((a) => `${a.attempt}:${a.state}${a.reason ? `(${a.reason})` : ""}`).join(" ");
    if (s.state === "errored" && s.attempts.every((a) => a.state === "lost")) continue;
    if (s.state !== "succeeded") {
      problems.push(`job ${j.index} (${j.jobId}) ended ${s.state}: ${JSON.stringify(s.failure)}; attempts ${attempts}`);
      continue;
    }
    // an attempt ends only by succeeding or by being lost with its killed runner (a drained busy runner reports runner_error)
    if (s.attempts.some((a, k) => a.state !== (k === s.attempts.length - 1 ? "succeeded" : "lost"))) problems.push(`job ${j.index} (${j.jobId}) attempts ${attempts}`);
    const wrong = logProblem(j.log, j.expected);
    if (wrong) problems.push(`job ${j.index} (${j.jobId}) log: ${wrong}`);
  }
  for (const [kind, items] of Object.entries(r.leftovers)) if (items.length > 0) problems.push(`left behind: ${kind}: ${items.join("; ")}`);
  if (r.upExitCode !== 0) problems.push(`deltaci up stopped with exit code ${r.upExitCode}`);
  return problems;
}

/** Null when `log` is the runner's markers around exactly `expected[k]` for step k, both succeeded. */
export function logProblem(log: string, expected: readonly string[]): string | null {
  const lines = log.split(/(?<=\n)/);
  const nonce = nonceOf((lines[0] ?? "").trimEnd());
  if (nonce === null) return `no log-start marker: ${JSON.stringify(log.slice(0, 200))}`;
  const got: string[] = expected.map(() => "");
  let step: number | null = null;
  let ended: unknown = null;
  for (const line of lines.slice(1)) {
    const m = parseMarker(line.trimEnd(), nonce);
    if (m === null) {
      if (step === null) return `output outside a step: ${JSON.stringify(line)}`;
      got[step] += line;
    } else if (m.kind === "step-start") {
      step = Number(m.data.index);
    } else if (m.kind === "step-end") {
      if (m.data.result !== "succeeded") return `step ${String(m.data.index)} ended ${JSON.stringify(m.data)}`;
      step = null;
    } else if (m.kind === "job-end") {
      ended = m.data.result;
    }
  }
  if (ended !== "succeeded") return `job-end result ${JSON.stringify(ended)}`;
  for (const [k, text] of expected.entries()) if (got[k] !== text) return `step ${k} printed ${JSON.stringify(got[k]?.slice(0, 200))}, expected ${JSON.stringify(text.slice(0, 200))}`;
  return null;
}
