/**
 * The runner host's figures (issue 10), through `deltaci up` as a real process (the bundles):
 *   cold:       min-idle 0, session mode. The first job after `up` started (host start included),
 *               then jobs with the host running but no idle session; and the host's RSS with
 *               0 sessions (after they ended).
 *   warm:       min-idle 1, one idle session in its lease long poll with its sandbox prewarmed;
 *               sequential jobs with idle gaps; the host's RSS with 1 idle session. Baseline in
 *               the same run: the same in `--runner-mode process`.
 *   throughput: min-idle = max-runners = 8; the host's RSS with 8 idle sessions; then N trivial
 *               jobs (`true`) submitted at once (8 submitters) until all ended: jobs/s and CPU
 *               per job (`up` = server + controller, plus host / runner processes and the crun
 *               they ran, from /proc). Baseline in the same run: `--runner-mode process`.
 * Memory is read 1–2 s after the host's last activity, and again once it settled (`--settle-ms`,
 * default 10 s, without jobs: V8's memory reducer has run) for 0 sessions (cold) and 1 idle
 * session after the warm jobs.
 * Pickup = the step's own `date +%s%N` − the wall time just before its POST /v1/jobs.
 * One client submits and polls (/metrics every 20 ms), so the check barely loads what it measures.
 * Prints one JSON document. Usage: tsx bench/runner-host.ts [--jobs 100] [--warm 20] [--cold 10]
 *   [--only cold,warm,throughput] [--isolation oci|process] [--modes session,process] [--cpu-prof-dir DIR]
 */
import { spawn } from "node:child_process";
import { cpus, loadavg } from "node:os";
import { TERMINAL_JOB_STATES } from "../src/protocol/schemas.ts";
import { summary, spec, wallNowMs } from "./lib/controller-bench.ts";
import { buildBundles, cpuDelta, smapsKiB, sourcesNewerThan, startUp, statusKiB, stepStartedMs, type UpProcess } from "./lib/up-process.ts";

const argv = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? (argv[i + 1] ?? dflt) : dflt;
};
const JOBS = Number(opt("jobs", "100"));
const WARM_N = Number(opt("warm", "20"));
const COLD_N = Number(opt("cold", "10"));
const only = opt("only", "cold,warm,throughput").split(",");
const isolation = opt("isolation", "oci") as "oci" | "process";
const modes = opt("modes", "session,process").split(",") as Array<"session" | "process">;
const cpuProfDir = argv.includes("--cpu-prof-dir") ? opt("cpu-prof-dir", "") : undefined;
const SETTLE_MS = Number(opt("settle-ms", "10000"));
const MAX = 8;
const GAP_MS = 1000;
const STEP = "date +%s%N";
const MiB = 1024;

const load = () => loadavg().map((x) => Math.round(x * 100) / 100);
const r1 = (x: number) => Math.round(x * 10) / 10;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Submits a `date` job and waits for its end: submit → step start (ms). */
async function pickup(up: UpProcess, name: string): Promise<number> {
  const t0 = wallNowMs();
  const id = await up.submit(spec(name, STEP));
  await up.until(`job ${id}`, async () => TERMINAL_JOB_STATES.includes((await up.job(id)).state), 120_000, 50);
  const j = await up.job(id);
  if (j.state !== "succeeded") throw new Error(`job ${id} ended ${j.state}`);
  return stepStartedMs(await up.log(id), id) - t0;
}

/** The host's VmRSS, and its own (private, not shared with other node processes: node's text) and proportional share, MiB. */
async function hostRssMiB(up: UpProcess): Promise<{ rss: number; private: number; pss: number } | null> {
  const pids = await up.hostPids();
  if (pids.length === 0) return null;
  const sum = (f: (p: number) => number) => r1(pids.reduce((a, p) => a + f(p), 0) / MiB);
  return { rss: sum((p) => statusKiB(p, "VmRSS")), private: sum((p) => smapsKiB(p, "Private_Dirty") + smapsKiB(p, "Private_Clean")), pss: sum((p) => smapsKiB(p, "Pss")) };
}

async function cold(bundle: string) {
  const up = await startUp({ bundle, mode: "session", isolation, maxRunners: MAX, minIdle: 0 });
  try {
    const loadAtStart = load();
    const firstAfterStartMs = r1(await pickup(up, "cold-first"));
    const ms: number[] = [];
    for (let i = 0; i < COLD_N; i++) {
      await up.until("no session left", async () => (await up.waiters()) === 0, 60_000, 50);
      await sleep(GAP_MS);
      ms.push(await pickup(up, `cold-${i}`));
    }
    await sleep(GAP_MS);
    const rss0 = await hostRssMiB(up);
    const loadAtEnd = load();
    await sleep(SETTLE_MS);
    return { firstJobAfterColdStartMs: firstAfterStartMs, pickupHostRunningNoIdleSession: summary(ms), goalP50Ms: 200, hostRssMiBNoSessions: rss0, hostRssMiBNoSessionsSettled: await hostRssMiB(up), loadavgAtStart: loadAtStart, loadavgAtEnd: loadAtEnd };
  } finally {
    await up.close();
  }
}

async function warm(bundle: string, mode: "session" | "process") {
  const up = await startUp({ bundle, mode, isolation, maxRunners: MAX, minIdle: 1 });
  try {
    const loadAtStart = load();
    const idle = async () => {
      await up.until("an idle runner", async () => (await up.waiters()) >= 1, 120_000, 50);
      await sleep(GAP_MS); // its sandbox prewarmed
    };
    await idle();
    const rss = mode === "session" ? await hostRssMiB(up) : null;
    const ms: number[] = [];
    for (let i = 0; i < WARM_N; i++) {
      ms.push(await pickup(up, `warm-${i}`));
      await idle();
    }
    const loadAtEnd = load();
    if (mode === "session") await sleep(SETTLE_MS);
    const settled = mode === "session" ? await hostRssMiB(up) : null;
    return { mode, pickup: summary(ms), goalP50Ms: mode === "session" ? 15 : undefined, hostRssMiBOneIdleSession: rss, hostRssMiBOneIdleSessionAfterJobsSettled: settled, loadavgAtStart: loadAtStart, loadavgAtEnd: loadAtEnd };
  } finally {
    await up.close();
  }
}

async function throughput(bundle: string, mode: "session" | "process") {
  const up = await startUp({ bundle, mode, isolation, maxRunners: MAX, minIdle: MAX, cpuProfDir });
  try {
    await up.until("8 idle runners", async () => (await up.waiters()) >= MAX, 300_000, 100);
    await sleep(2 * GAP_MS); // sandboxes prewarmed, start-up CPU spent
    const rss8 = mode === "session" ? await hostRssMiB(up) : null;
    const loadAtStart = load();
    const before = await up.finished();
    const cpu0 = await up.cpuSeconds();
    const t0 = wallNowMs();
    let next = 0;
    const ids = new Set<string>();
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < JOBS) ids.add(await up.submit(spec(`tp-${next++}`, "true")));
    }));
    const submitS = (wallNowMs() - t0) / 1000;
    // Polled slowly (the poll costs the server CPU); the end is the last job's own finishedAt.
    await up.until("all jobs ended", async () => (await up.finished()).done - before.done >= JOBS, 30 * 60_000, 250);
    const lastEnd = Math.max(...(await up.jobs()).filter((j) => ids.has(j.jobId)).map((j) => Date.parse(j.finishedAt ?? "")));
    const wallS = (lastEnd - t0) / 1000;
    const cpu = cpuDelta(cpu0, await up.cpuSeconds());
    const cpuS = cpu.total;
    const end = await up.finished();
    return {
      mode, jobs: JOBS, succeeded: end.succeeded - before.succeeded, jobsPerSecond: Math.round((JOBS / wallS) * 100) / 100, goalJobsPerSecond: 40,
      wallSeconds: Math.round(wallS * 100) / 100, submitSeconds: Math.round(submitS * 100) / 100,
      cpuMsPerJob: r1((cpuS / JOBS) * 1000), goalCpuMsPerJob: 50, cpuSecondsTotal: Math.round(cpuS * 100) / 100,
      cpuSecondsByPart: { ...cpu, note: "upSelf: server + controller; upChildren: exited children (hosts/runners) of up; childrenSelf: live hosts/runners (childrenSelfSys: of it in the kernel); childrenChildren: what they ran (crun, the disk tool), waited for or still live (the resident spawner and what it waited for)" },
      hostRssMiBEightIdleSessions: rss8, loadavgAtStart: loadAtStart, loadavgAtEnd: load(),
    };
  } finally {
    await up.close();
  }
}

const bundle = buildBundles();
const out: Record<string, unknown> = { bench: "runner-host", isolation, maxRunners: MAX, machine: { cpus: cpus().length } };
if (only.includes("cold")) out.cold = await cold(bundle);
if (only.includes("warm")) {
  const res = [];
  for (const m of modes) res.push(await warm(bundle, m));
  out.warm = res;
}
if (only.includes("throughput")) {
  const res = [];
  for (const m of modes) res.push(await throughput(bundle, m));
  out.throughput = res;
}
const mem = (k: string): { rss: number; private: number; pss: number } | null => {
  for (const v of [out.cold, ...((out.warm as unknown[]) ?? []), ...((out.throughput as unknown[]) ?? [])]) {
    const x = (v as Record<string, unknown> | undefined)?.[k];
    if (x) return x as { rss: number; private: number; pss: number };
  }
  return null;
};
/** Baseline: VmRSS of a bare idle `node` (the floor under any host). */
async function bareNodeRssMiB(): Promise<number> {
  const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 5000)"], { stdio: "ignore" });
  await sleep(1000);
  const kib = statusKiB(child.pid ?? 0, "VmRSS");
  child.kill();
  return r1(kib / MiB);
}
const [m0, m1, m8] = [mem("hostRssMiBNoSessions"), mem("hostRssMiBOneIdleSession"), mem("hostRssMiBEightIdleSessions")];
out.memory = {
  hostMiB: { sessions0: m0, sessions1: m1, sessions8: m8 },
  hostMiBSettled: { sessions0: mem("hostRssMiBNoSessionsSettled"), sessions1AfterJobs: mem("hostRssMiBOneIdleSessionAfterJobsSettled") },
  baselineBareNodeRssMiB: await bareNodeRssMiB(),
  marginalRssMiBPerIdleSession: m0 !== null && m8 !== null ? r1((m8.rss - m0.rss) / 8) : null,
  goals: { idleHostRssMiB: 60, perIdleSessionMiB: 10 },
  note: "runner host, each from its own `deltaci up` (cold: 0 sessions after its jobs, warm: 1, throughput: 8 idle sessions; settled: the same host --settle-ms later); rss = VmRSS, private = Private_* of smaps_rollup (not node's shared text), pss = its proportional share",
};
out.loadavgAtEnd = load();
// bin/deltaci.js runs hosts and runners from the sources (tsx) once a source file is newer than the bundle.
out.bundleStaleDuringRun = sourcesNewerThan(bundle);
process.stdout.write(`${JSON.stringify(out)}\n`);
process.exit(0);
