/**
 * Controller pickup: submit → the first step's process running.
 *   warm: min-idle 1, a runner already waits in its lease long poll;
 *   cold: min-idle 0, the controller must start a runner (breakdown: controller reaction,
 *         runner process start → registered, registered → leased, leased → step running).
 * Measure: the step is `date +%s%N`; its first output line is the wall-clock time at which the
 * step's first process ran (read from the job log afterwards, so the measure adds nothing to the
 * path). Pickup = that time − the time just before `POST /v1/jobs` was sent. It includes one
 * fork/exec of `date` (baseline below). Baselines in the same run: protocol-level pickup (a raw
 * client waiting in lease, on the same server), sandbox create+start of a step, and process
 * start of the CLI (bundle vs tsx) and of bare node.
 * Runner phases (from the runners' own "job phases" log lines): ms since the lease at which the
 * spool, the sandbox and the first step were ready, and the exit path (step end → complete
 * accepted → sandbox disposed → process exit). Warm means idle long enough to have prewarmed its
 * sandbox (the runner logs "prewarm done"); `--no-prewarm` starts runners without prewarming.
 * Usage: tsx bench/controller-pickup.ts [warmN=30] [coldN=12] [isolation=both|oci|process] [--runner=cli|runner-only] [--no-prewarm]
 */
import { join } from "node:path";
import { readdir } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { systemClock } from "../src/base/clock.ts";
import { CrunSandboxFactory } from "../src/sandbox/oci/crun-sandbox-factory.ts";
import { ProcessSandboxFactory } from "../src/sandbox/process/process-sandbox.ts";
import { slotInfo } from "../src/sandbox/slots.ts";
import type { SandboxFactory } from "../src/sandbox/types.ts";
import { ROOT, bundledCli, crunAvailable, runnerCommandFromArgv, runnerLog, runnerOnlyBundle, spec, startStack, summary, timeCommand, wallNowMs, type Stack } from "./lib/controller-bench.ts";

const pos = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const warmN = Number(pos[0] ?? 30);
const coldN = Number(pos[1] ?? 12);
const which = pos[2] ?? "both";
const STEP = "date +%s%N";
const prewarm = !process.argv.includes("--no-prewarm");

async function stepStartedMs(s: Stack, id: string): Promise<number> {
  const log = await s.log(id);
  const line = log.split("\n").find((l) => /^\d{19}$/.test(l.trim()));
  if (!line) throw new Error(`no timestamp in the log of ${id}: ${log.slice(0, 300)}`);
  return Number(BigInt(line.trim()) / 1000n) / 1000;
}

/** When the runner that ran `id` logged its lease (searching every slot's runner log), and whether the job took a prewarmed sandbox. */
async function leasedAt(s: Stack, id: string): Promise<{ time: number; tookPrewarmed: boolean } | null> {
  for (const slot of await readdir(join(s.dir, "runners", "controller")).catch(() => [] as string[])) {
    const log = await runnerLog(s, slot.replace(/^slot-/, ""));
    const hit = log.find((l) => l.msg === "leased" && l.jobId === id);
    if (hit) return { time: hit.time, tookPrewarmed: log.some((l) => l.msg === "took a prewarmed sandbox" && l.jobId === id) };
  }
  return null;
}

type Phases = Partial<Record<string, number>>;

/** What a runner's exit tells (its log tail): the "job phases" marks (ms since lease) and when it logged its exit. */
interface RunnerEnd { phases: Phases; exitsLoggedAt: number; processExitAt: number }

/** Listens to runner exits: job id → phases, exit log time and process exit time. */
function watchRunnerEnds(s: Stack): Map<string, RunnerEnd> {
  const ends = new Map<string, RunnerEnd>();
  s.controller.provider.onExit((e) => {
    const lines = e.logTail.split("\n").filter((l) => l.startsWith("{")).flatMap((l) => {
      try {
        return [JSON.parse(l) as { msg: string; time: number; jobId?: string; phases?: Phases }];
      } catch {
        return []; // the tail's first line may be cut
      }
    });
    const phases = lines.find((l) => l.msg === "job phases");
    const exits = lines.find((l) => l.msg === "runner exits");
    if (phases?.jobId && phases.phases && exits) ends.set(phases.jobId, { phases: phases.phases, exitsLoggedAt: exits.time, processExitAt: e.runner.launchedAtMs + e.lifetimeMs });
  });
  return ends;
}

/** Per phase, the summary of its marks over all jobs (ms since lease). */
function phaseSummary(all: Phases[], names: string[]): Record<string, ReturnType<typeof summary>> {
  return Object.fromEntries(names.map((n) => [n, summary(all.flatMap((p) => (p[n] === undefined ? [] : [p[n]])))]));
}

/**
 * Waits for the job to succeed; returns when the server finished it (wall ms). Polls every
 * 20 ms, not faster: on 2 cores a tighter poll of this process (server included) takes CPU from
 * the runner being measured. The finish time comes from the server, so the poll costs no precision.
 */
/**
 * Warm means idle for a while: waits until an idle runner's log says its sandbox was prewarmed
 * (polls every 10 ms for up to 10 s; a runner started with --no-prewarm never says so). False
 * when none did in time.
 */
async function prewarmed(s: Stack): Promise<boolean> {
  const ready = async () => {
    for (const r of s.controller.provider.list().filter((x) => x.state === "idle")) {
      if ((await runnerLog(s, r.id.split("-")[1] ?? "")).some((l) => l.msg === "prewarm done")) return true;
    }
    return false;
  };
  for (const deadline = Date.now() + 10_000; Date.now() < deadline;) {
    if (await ready()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return false;
}

async function waitDone(s: Stack, id: string): Promise<number> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const j = await s.job(id);
    if (j.state === "succeeded") return j.finishedAt ? Date.parse(j.finishedAt) : wallNowMs();
    if (["failed", "errored", "canceled"].includes(j.state)) throw new Error(`job ${id} ${j.state}: ${JSON.stringify(j.failure)}`);
    if (Date.now() > deadline) throw new Error(`timed out: job ${id}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Raw protocol client on the same server: a waiting lease, then submit; lease arrival − submit sent. */
async function protocolPickup(s: Stack, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const { body } = await s.api.call<{ tokens: string[] }>({ method: "POST", path: "/v1/controller/registrations", token: s.server.controllerToken, json: { count: 1, labels: ["proto-bench"] } });
    const caps = { os: process.platform, arch: process.arch, labels: ["proto-bench"], toolchains: {}, resources: { cpus: 2, memoryMiB: 4096, diskMiB: 4096 }, isolation: ["process"] };
    const reg = await s.api.call<{ sessionToken: string }>({ method: "POST", path: "/v1/runner/register", token: body.tokens[0] as string, json: { name: "proto", version: "0", capabilities: caps } });
    const before = await s.serverMetric("deltaci_lease_waiters");
    let leasedAt = 0;
    const lease = s.api.call<{ lease: { leaseToken: string } }>({ method: "POST", path: "/v1/runner/lease", token: reg.body.sessionToken, json: { waitMs: 30_000 } }).then((r) => {
      leasedAt = wallNowMs();
      return r.body.lease;
    });
    await s.until("raw waiter", async () => (await s.serverMetric("deltaci_lease_waiters")) > before);
    const sent = wallNowMs();
    const sp = spec(`proto-${i}`, "true");
    sp.runsOn.labels = ["proto-bench"];
    await s.submit(sp);
    const l = await lease;
    out.push(leasedAt - sent);
    const empty = { bytes: 0, sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" };
    await s.api.call({ method: "POST", path: "/v1/runner/complete", token: l.leaseToken, json: { result: "succeeded", exitCode: 0, failure: null, steps: [{ name: "s", exitCode: 0, signal: null, startedAt: null, finishedAt: null }], artifacts: [], log: empty } }).catch(() => {});
  }
  return out;
}

/** The sandbox alone: create + start the step + its process running (step prints its time) + dispose. */
async function sandboxStart(factory: SandboxFactory, dir: string, n: number): Promise<{ createToStepMs: number[]; totalMs: number[] }> {
  const createToStep: number[] = [];
  const total: number[] = [];
  const slot = { ...slotInfo(60_000 + (process.pid % 5000), dir), workDir: join(dir, "sandbox-slot") };
  for (let i = 0; i < n; i++) {
    const t0 = wallNowMs();
    const p0 = performance.now();
    const sb = await factory.create({
      jobId: `bench-${i}`, slot, image: { kind: "host" }, limits: spec("x", "true").limits, network: { egress: "none" }, sourceArchive: null, caches: [], auditLogPath: null,
    });
    try {
      let out = "";
      await sb.start({ run: STEP, shell: null, env: {}, workingDirectory: null, timeoutMs: 30_000 }, { stdout: (d) => (out += d.toString()), stderr: () => {} }).done;
      createToStep.push(Number(BigInt(out.trim()) / 1000n) / 1000 - t0);
    } finally {
      await sb.dispose();
    }
    total.push(performance.now() - p0);
  }
  return { createToStepMs: createToStep, totalMs: total };
}

async function warm(isolation: "oci" | "process", command: { command: string; args: string[] }) {
  const s = await startStack({ isolation, maxRunners: 2, minIdle: 1, command });
  try {
    const proto = await protocolPickup(s, 30);
    const pickup: number[] = [];
    const afterReturn: number[] = [];
    const e2e: number[] = [];
    const toLeased: number[] = [];
    const leasedToStep: number[] = [];
    const ends = watchRunnerEnds(s);
    const leasedAtOf = new Map<string, number>();
    let notPrewarmed = 0;
    let tookPrewarmed = 0;
    for (let i = 0; i < warmN; i++) {
      await s.until("a warm runner in lease", async () => (await s.serverMetric("deltaci_lease_waiters")) >= 1 && s.controller.provider.list().some((r) => r.state === "idle"));
      if (prewarm && !(await prewarmed(s))) notPrewarmed++;
      const sent = wallNowMs();
      const id = await s.submit(spec(`warm-${i}`, STEP));
      const returned = wallNowMs();
      const done = await waitDone(s, id);
      const step = await stepStartedMs(s, id);
      pickup.push(step - sent);
      afterReturn.push(step - returned);
      e2e.push(done - sent);
      const at = await leasedAt(s, id);
      if (at?.tookPrewarmed) tookPrewarmed++;
      const leased = at?.time ?? null;
      if (leased !== null) {
        toLeased.push(leased - sent);
        leasedToStep.push(step - leased);
        leasedAtOf.set(id, leased);
      }
    }
    await s.until("every warm runner exited", () => [...leasedAtOf.keys()].every((id) => ends.has(id)), 60_000).catch(() => {});
    const phases: Phases[] = [];
    const exitPath = { stepsDoneToReported: [] as number[], reportedToDisposed: [] as number[], stepsDoneToExitLogged: [] as number[], stepsDoneToProcessExit: [] as number[] };
    for (const [id, leased] of leasedAtOf) {
      const end = ends.get(id);
      if (!end) continue;
      const p = end.phases;
      phases.push(p);
      if (p.stepsDone === undefined) continue;
      if (p.reported !== undefined) exitPath.stepsDoneToReported.push(p.reported - p.stepsDone);
      if (p.reported !== undefined && p.disposed !== undefined) exitPath.reportedToDisposed.push(p.disposed - p.reported);
      exitPath.stepsDoneToExitLogged.push(end.exitsLoggedAt - leased - p.stepsDone);
      exitPath.stepsDoneToProcessExit.push(end.processExitAt - leased - p.stepsDone);
    }
    const factory: SandboxFactory = isolation === "oci"
      ? new CrunSandboxFactory({ clock: systemClock, logger: { info: () => {}, warn: () => {} }, cgroupParent: "deltaci" })
      : new ProcessSandboxFactory({ clock: systemClock, logger: { info: () => {}, warn: () => {} } });
    const sb = await sandboxStart(factory, s.dir, 20);
    return {
      pickup: summary(pickup), pickupAfterSubmitReturned: summary(afterReturn), submitToJobSucceeded: summary(e2e),
      breakdown: {
        submitToRunnerLogsLeased: summary(toLeased), leasedToStepRunning: summary(leasedToStep), note: "runner log times have 1 ms resolution",
        jobsSubmittedBeforeTheRunnerHadPrewarmed: notPrewarmed, jobsThatTookThePrewarmedSandbox: tookPrewarmed,
        runnerPhasesSinceLease: phaseSummary(phases, ["jobDir", "logStarted", "sandboxCreated", "firstStepStarted", "firstHeartbeat", "firstLogPut", "stepsDone", "reported", "heartbeatStopped", "disposed", "cleanedUp"]),
        exitPath: Object.fromEntries(Object.entries(exitPath).map(([k, v]) => [k, summary(v)])),
      },
      baseline: { protocolPickup: summary(proto), sandboxCreateToStepRunning: summary(sb.createToStepMs), sandboxCreateRunDispose: summary(sb.totalMs) },
    };
  } finally {
    await s.close();
  }
}

async function cold(isolation: "oci" | "process", command: { command: string; args: string[] }) {
  const s = await startStack({ isolation, maxRunners: 2, minIdle: 0, command });
  const parts = { reaction: [] as number[], spawnToRegistered: [] as number[], registeredToLeased: [] as number[], leasedToStepRunning: [] as number[], leasedToSandboxCreated: [] as number[] };
  let tookPrewarmed = 0;
  const pickup: number[] = [];
  try {
    for (let i = 0; i < coldN; i++) {
      await s.until("no runner", () => s.controller.provider.list().length === 0);
      const nLaunch = s.launches.length;
      const sent = wallNowMs();
      const id = await s.submit(spec(`cold-${i}`, STEP));
      await waitDone(s, id);
      const step = await stepStartedMs(s, id);
      pickup.push(step - sent);
      await s.until("runner exit", () => s.controller.provider.list().length === 0);
      const launch = s.launches[nLaunch];
      if (!launch) throw new Error("no launch recorded");
      const log = await runnerLog(s, launch.slot);
      const registered = log.find((l) => l.msg === "registered")?.time ?? NaN;
      const leased = log.find((l) => l.msg === "leased")?.time ?? NaN;
      parts.reaction.push(launch.atMs - sent);
      parts.spawnToRegistered.push(registered - launch.atMs);
      parts.registeredToLeased.push(leased - registered);
      parts.leasedToStepRunning.push(step - leased);
      const created = log.find((l) => l.msg === "job phases")?.phases as Phases | undefined;
      if (created?.sandboxCreated !== undefined) parts.leasedToSandboxCreated.push(created.sandboxCreated);
      if (log.some((l) => l.msg === "took a prewarmed sandbox")) tookPrewarmed++;
    }
    return {
      pickup: summary(pickup),
      breakdown: {
        note: "ms; runner log times have 1 ms resolution",
        controllerReaction_submitToSpawn: summary(parts.reaction),
        processStartAndRegister_spawnToRegistered: summary(parts.spawnToRegistered),
        lease_registeredToLeased: summary(parts.registeredToLeased),
        sandboxAndStep_leasedToStepRunning: summary(parts.leasedToStepRunning),
        of_which_leasedToSandboxCreated: summary(parts.leasedToSandboxCreated),
        jobsThatTookThePrewarmedSandbox: tookPrewarmed,
      },
    };
  } finally {
    await s.close();
  }
}

async function main() {
  const loadAtStart = loadavg();
  // The runners the controller spawns inherit this environment (src/config/runner-config.ts).
  if (!prewarm) process.env.DELTACI_RUNNER_PREWARM = "0";
  const { name: runnerEntry, command } = await runnerCommandFromArgv(process.argv);
  const cli = await bundledCli();
  const lean = await runnerOnlyBundle();
  const processStart = {
    unit: "ms (p50 of 10 runs, whole process to exit)",
    nodeBare: timeCommand(process.execPath, ["-e", "0"], 10),
    cliBundleVersion: timeCommand(cli.command, [...cli.args, "--version"], 10),
    runnerOnlyBundleVersion: timeCommand(lean.command, [...lean.args, "--version"], 10),
    cliTsxVersion: timeCommand(process.execPath, ["--import", "tsx", join(ROOT, "src", "cli", "main.ts"), "--version"], 10),
    dateForkExec: timeCommand("date", ["+%s%N"], 10),
  };
  const isolations = (which === "both" ? ["process", "oci"] : [which]).filter((i) => i !== "oci" || crunAvailable()) as Array<"oci" | "process">;
  const results: Record<string, unknown> = {};
  for (const iso of isolations) results[iso] = { warm: await warm(iso, command), cold: await cold(iso, command) };
  process.stdout.write(JSON.stringify({
    bench: "controller-pickup", unit: "ms", goals: { warmPickupP50: "≤ 15 ms", coldPickupP50: "≤ 200 ms" },
    measure: "submit sent → wall-clock time printed by the step's first process (`date +%s%N`), read from the job log",
    machine: { cpus: cpus().length, loadavgAtStart: loadAtStart, loadavgAtEnd: loadavg() }, warmN, coldN, runnerEntry, prewarm, processStart, results,
  }) + "\n");
}

await main();
process.exit(0);
