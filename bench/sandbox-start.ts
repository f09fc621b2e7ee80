/**
 * Sandbox start-up: create + `true` as the first step + dispose of a fully hardened oci sandbox
 * (host image, userns, all namespaces, seccomp BPF, cgroup limits, loop-mounted disk quota),
 * built on demand (cold, in its own slot) and prewarmed (built before the clock starts, as a
 * runner does while it waits), plus the slot recycle as the runner host does it: job end
 * (dispose) → the slot's next sandbox prewarmed and ready. Against raw `crun run` of an
 * equivalent bundle (same mounts, userns, limits; seccomp as JSON and as precompiled BPF) and
 * plain fork/exec of /bin/true, measured round-robin in the same run. Prints JSON.
 * Usage: tsx bench/sandbox-start.ts [runs=50]
 */
import { spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { systemClock } from "../src/base/clock.ts";
import { bindMount, bundleConfig } from "../src/sandbox/oci/bundle.ts";
import { containerName } from "../src/sandbox/job-names.ts";
import { CrunSandboxFactory } from "../src/sandbox/oci/crun-sandbox-factory.ts";
import { JobCgroup } from "../src/sandbox/oci/cgroups.ts";
import { slotInfo } from "../src/sandbox/slots.ts";
import type { SandboxSpec } from "../src/sandbox/types.ts";

const runs = Number(process.argv[2] ?? 50);
const root = mkdtempSync(join(tmpdir(), "deltaci-bench-"));
chmodSync(root, 0o755);
const phases = new Map<string, number[]>();
const phasesNoSpare = new Map<string, number[]>();
const logger = { info: () => {}, warn: (_f: Record<string, unknown>, m: string) => process.stderr.write(`warn: ${m}\n`) };
const record = (into: Map<string, number[]>) => (phase: string, ms: number) => into.set(phase, [...(into.get(phase) ?? []), ms]);
/** As the runner host runs it: spare disks made while a slot's job runs. */
const factory = new CrunSandboxFactory({ clock: systemClock, logger, trace: record(phases), spareDisks: true });
/** Without spare disks: every build writes its disk from the template and mounts it (a slot's first job). */
const plainFactory = new CrunSandboxFactory({ clock: systemClock, logger, trace: record(phasesNoSpare) });
const slot = slotInfo(40_000 + (process.pid % 1000), join(root, "slots"));
/** Cold runs get slots of their own: the recycled slot always holds a warm sandbox of the same shape. */
const coldSlot = slotInfo(41_000 + (process.pid % 1000), join(root, "slots"));
const plainSlot = slotInfo(42_000 + (process.pid % 1000), join(root, "slots"));

function stats(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => Number((s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN).toFixed(2));
  return { n: s.length, p50: q(0.5), p90: q(0.9), p99: q(0.99), mean: Number((s.reduce((a, b) => a + b, 0) / s.length).toFixed(2)) };
}

function wait(cmd: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: "ignore" });
    c.once("error", reject);
    c.once("exit", (code) => resolve(code ?? 1));
  });
}

const spec = (i: number, inSlot = slot): SandboxSpec => ({
  jobId: `bench-${process.pid}-${i}`,
  slot: inSlot,
  image: { kind: "host" },
  limits: { timeoutMs: 60_000, cpus: 1, memoryMiB: 512, diskMiB: 1024, pids: 512, logMiB: 64 },
  network: { egress: "none" },
  sourceArchive: null,
  caches: [],
  auditLogPath: null,
});

/**
 * One job's sandbox: built on demand in its own slot (cold), or prewarmed and taken by `create`
 * (warm). A warm run ends as the runner host's slot recycle does: right after `dispose`, the slot's
 * next sandbox is prewarmed; `recycle` is job end → that sandbox ready.
 */
async function sandboxRun(i: number, mode: "cold" | "coldNoSpare" | "warm") {
  const warm = mode === "warm";
  const f = mode === "coldNoSpare" ? plainFactory : factory;
  const inSlot = { cold: coldSlot, coldNoSpare: plainSlot, warm: slot }[mode];
  i += { cold: 1000, coldNoSpare: 50_000, warm: 100_000 }[mode];
  if (warm) await factory.prewarm(spec(i)); // a no-op when the previous run's recycle left one
  const t0 = performance.now();
  const sb = await f.create(spec(i, inSlot));
  const t1 = performance.now();
  const r = await sb.start({ run: "true", shell: "sh", env: {}, workingDirectory: null, timeoutMs: 60_000 }, { stdout: () => {}, stderr: () => {} }).done;
  if (r.exitCode !== 0) throw new Error(`step failed: ${JSON.stringify(r)}`);
  const t2 = performance.now();
  await sb.dispose();
  const t3 = performance.now();
  if (warm) await factory.prewarm(spec(i + 1));
  const t4 = performance.now();
  // the background teardown ends before the next measurement
  await f.settle(inSlot);
  const teardown = performance.now() - t3;
  return { total: t3 - t0, create: t1 - t0, step: t2 - t1, dispose: t3 - t2, recycle: t4 - t2, teardown };
}

async function prepareRawBundles(prepared: Awaited<ReturnType<CrunSandboxFactory["prepare"]>>) {
  const rawDir = join(root, "raw");
  const rootfs = prepared.hostSkeletonDir;
  mkdirSync(join(rawDir, "ws"), { recursive: true });
  const mounts = [...prepared.hostMounts];
  mounts.push(bindMount(join(rawDir, "ws"), "/workspace", false));
  const variants: Array<[string, object | null, Record<string, string>]> = [
    ["crun run (seccomp JSON)", prepared.seccomp.profile, {}],
    ["crun run (seccomp BPF)", prepared.seccomp.profile, prepared.seccomp.bpfBase64 ? { "run.oci.seccomp_bpf_data": prepared.seccomp.bpfBase64 } : {}],
    ["crun run (no seccomp)", null, {}],
  ];
  const bundles: Array<[string, string]> = [];
  for (const [name, seccomp, annotations] of variants) {
    const bundle = join(rawDir, name.replace(/\W+/g, "-"));
    mkdirSync(bundle, { recursive: true });
    const config = bundleConfig({
      rootfs, rootReadonly: true, hostname: "sandbox", uidBase: slot.hostUidBase, uidCount: slot.uidCount,
      cgroupsPath: `/deltaci/slot-${slot.index}/raw`, memoryMiB: 512, pids: 512, cpus: 1, tmpMiB: 64, mounts,
      initArgs: ["/usr/bin/true"], env: ["PATH=/usr/bin:/bin"], seccomp, annotations, apparmorProfile: null,
    });
    writeFileSync(join(bundle, "config.json"), JSON.stringify(config));
    bundles.push([name, bundle]);
  }
  return bundles;
}

async function rawRun(prepared: Awaited<ReturnType<CrunSandboxFactory["prepare"]>>, bundle: string, i: number): Promise<number> {
  const id = `deltaci-s${slot.index}-raw${i}`;
  const [cmd, args] = prepared.crun.argv(["run", "--no-new-keyring", "--bundle", bundle, id]);
  const t0 = performance.now();
  const code = await wait(cmd, args);
  const ms = performance.now() - t0;
  await prepared.crun.run(["delete", "-f", id]);
  if (code !== 0) throw new Error(`crun run of ${bundle} exited ${code}`);
  return ms;
}

async function main() {
  const prepared = await factory.prepare();
  const bundles = await prepareRawBundles(prepared);
  const sandbox = { total: [] as number[], create: [] as number[], step: [] as number[], dispose: [] as number[], teardown: [] as number[] };
  const noSpare = { total: [] as number[], create: [] as number[], step: [] as number[], dispose: [] as number[], teardown: [] as number[] };
  const warm = { total: [] as number[], create: [] as number[], step: [] as number[], dispose: [] as number[], teardown: [] as number[], createAndStep: [] as number[], recycle: [] as number[] };
  const raw: Record<string, number[]> = Object.fromEntries(bundles.map(([name]) => [name, [] as number[]]));
  const fork: number[] = [];
  // Round-robin, so that load from other processes hits every variant alike.
  for (let i = -3; i < runs; i++) {
    if (i === 0) {
      phases.clear();
      phasesNoSpare.clear();
    }
    const r = await sandboxRun(i, "cold");
    const n = await sandboxRun(i, "coldNoSpare");
    const w = await sandboxRun(i, "warm");
    const rawTimes: Array<[string, number]> = [];
    for (const [name, bundle] of bundles) rawTimes.push([name, await rawRun(prepared, bundle, i + 3)]);
    const t0 = performance.now();
    await wait("/bin/true", []);
    const forkMs = performance.now() - t0;
    if (i < 0) continue;
    for (const k of Object.keys(sandbox) as Array<keyof typeof sandbox>) {
      sandbox[k].push(r[k]);
      noSpare[k].push(n[k]);
      warm[k].push(w[k]);
    }
    warm.createAndStep.push(w.create + w.step);
    warm.recycle.push(w.recycle);
    for (const [name, ms] of rawTimes) raw[name]?.push(ms);
    fork.push(forkMs);
  }

  // memory held by one idle sandbox: its cgroup's charge and its init's RSS (built for its job, not the warm one)
  await factory.close();
  const idle = await factory.create(spec(runs + 1));
  const cg = new JobCgroup(prepared.layout, `/deltaci/slot-${slot.index}/${containerName(slot.index, spec(runs + 1).jobId)}`);
  const memDir = prepared.layout.kind === "v1" ? join(prepared.layout.controllers.get("memory") ?? "", cg.path) : join(prepared.layout.root, cg.path);
  const cgroupBytes = Number(readFileSync(join(memDir, prepared.layout.kind === "v1" ? "memory.usage_in_bytes" : "memory.current"), "utf8"));
  let rssKiB = 0;
  for (const pid of await cg.pids()) rssKiB += Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? NaN);
  await idle.dispose();
  await factory.close();
  await plainFactory.close();
  const left = [...(await factory.inspectSlot(slot)), ...(await factory.inspectSlot(coldSlot)), ...(await plainFactory.inspectSlot(plainSlot))];
  await factory.reapSlot(slot);
  await factory.reapSlot(coldSlot);
  await plainFactory.reapSlot(plainSlot);
  rmSync(root, { recursive: true, force: true });

  const sb = stats(sandbox.total);
  const rawBpf = stats(raw["crun run (seccomp BPF)"] ?? []);
  const rawJson = stats(raw["crun run (seccomp JSON)"] ?? []);
  const out = {
    bench: "sandbox-start",
    runs,
    unit: "ms",
    loadAverage1m: Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]),
    // dispose resolves once the job is dead and off its path; `backgroundTeardown` is the rest, after it
    // cold: no prewarmed container; the slot's spare disk (made while its previous job ran) is taken
    sandbox: { createFirstStepDispose: sb, create: stats(sandbox.create), firstStepTrue: stats(sandbox.step), dispose: stats(sandbox.dispose), backgroundTeardown: stats(sandbox.teardown) },
    // cold without spare disks: the disk is written from the template and mounted in create
    sandboxNoSpare: { createFirstStepDispose: stats(noSpare.total), create: stats(noSpare.create), firstStepTrue: stats(noSpare.step), dispose: stats(noSpare.dispose), backgroundTeardown: stats(noSpare.teardown) },
    // prewarm() ran before the clock started (a runner does it while it waits for a lease)
    prewarmed: { createFirstStepDispose: stats(warm.total), takeWarm: stats(warm.create), firstStepTrue: stats(warm.step), takeAndFirstStep: stats(warm.createAndStep), dispose: stats(warm.dispose) },
    // job end (dispose called) → the slot's next sandbox prewarmed and ready (the runner host's recycle)
    slotRecycle: stats(warm.recycle),
    phasesP50: Object.fromEntries([...phases].map(([k, v]) => [k, stats(v).p50])),
    phasesNoSpareP50: Object.fromEntries([...phasesNoSpare].map(([k, v]) => [k, stats(v).p50])),
    baselines: Object.fromEntries([...Object.entries(raw).map(([k, v]) => [k, stats(v)]), ["fork/exec /bin/true (node spawn)", stats(fork)]]),
    ratio: {
      sandboxP50OverRawCrunJsonP50: Number((sb.p50 / rawJson.p50).toFixed(2)),
      sandboxP50OverRawCrunBpfP50: Number((sb.p50 / rawBpf.p50).toFixed(2)),
      sandboxNoSpareP50OverRawCrunBpfP50: Number((stats(noSpare.total).p50 / rawBpf.p50).toFixed(2)),
      slotRecycleP50OverRawCrunBpfP50: Number((stats(warm.recycle).p50 / rawBpf.p50).toFixed(2)),
      prewarmedTakeAndFirstStepP50OverRawCrunJsonP50: Number((stats(warm.createAndStep).p50 / rawJson.p50).toFixed(2)),
    },
    idleSandboxMemory: { cgroupBytes, initRssKiB: rssKiB },
    leftAfterClose: left,
  };
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch(async (e: unknown) => {
  process.stderr.write(`${String(e instanceof Error ? e.stack : e)}\n`);
  await factory.reapSlot(slot).catch(() => {});
  await factory.reapSlot(coldSlot).catch(() => {});
  await plainFactory.reapSlot(plainSlot).catch(() => {});
  rmSync(root, { recursive: true, force: true });
  process.exit(1);
});
