/**
 * Wall time of `deltaci run` of a one-step `echo` job, from the command's start to its exit
 * (embedded server, controller, runner process and sandbox included), against `crun run` of an
 * equivalent bundle (host /usr read-only, `sh -c echo`) and `sh -c echo`, in the same run.
 * Also the CLI's own start-up: `deltaci --version` from the bundle and through tsx.
 * The bundle is rebuilt first and run directly (dist/deltaci-main.cjs): bin/deltaci.js would run
 * the sources through tsx whenever a file in src/ changed since the build.
 * With `--baseline OTHER/dist/deltaci-main.cjs` (another checkout's bundle; dist/deltaci.mjs for
 * a build before the CommonJS entries), also `deltaci run` (oci) of that bundle, its runs
 * interleaved with this one's so that both see the same load.
 * Prints one JSON line. Usage: tsx bench/cli-run.ts [runs] [--baseline BUNDLE]   (goal: deltaci run ≤ 300 ms, issue 10)
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { projectRoot } from "../src/config/paths.ts";

const args = process.argv.slice(2);
const baselineAt = args.indexOf("--baseline");
const baseline = baselineAt >= 0 ? args.splice(baselineAt, 2)[1] ?? null : null;
const runs = Number(args[0] ?? 7);
const root = projectRoot();
const bin = join(root, "bin", "deltaci.js");
const cliBundle = join(root, "dist", "deltaci-main.cjs");
const built = spawnSync(process.execPath, [join(root, "scripts", "build.mjs")], { stdio: "inherit" });
if (built.status !== 0) throw new Error("npm run build failed");
const work = mkdtempSync(join(tmpdir(), "deltaci-bench-cli-"));

/** Phase marks of the deltaci runs (`--json` → timingsMs), for where the time goes. */
const phases: Record<string, Record<string, number[]>> = {};

function time(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; phasesOf?: string } = {}): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { cwd: opts.cwd ?? work, env: { ...process.env, ...opts.env }, stdio: ["ignore", "pipe", "pipe"], encoding: "utf8" });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  if (opts.phasesOf) {
    const marks = (JSON.parse(r.stdout) as { timingsMs: Record<string, number> }).timingsMs;
    const into = (phases[opts.phasesOf] ??= {});
    for (const [k, v] of Object.entries(marks)) (into[k] ??= []).push(v);
  }
  return ms;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

function stats(samples: number[]) {
  const s = [...samples].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? 0;
  const r = (x: number) => Math.round(x * 10) / 10;
  return { runs: s.length, p50Ms: r(q(0.5)), minMs: r(s[0] ?? 0), maxMs: r(s.at(-1) ?? 0) };
}

/** `a` and `b` alternately, n samples each (after one warm-up of each). */
function measurePair(labels: [string, string], n: number, a: () => number, b: () => number) {
  a();
  b();
  const sa: number[] = [];
  const sb: number[] = [];
  for (let i = 0; i < n; i++) {
    sa.push(a());
    sb.push(b());
  }
  process.stderr.write(`${labels[0]}: ${JSON.stringify(stats(sa))}\n${labels[1]}: ${JSON.stringify(stats(sb))}\n`);
  return [stats(sa), stats(sb)] as const;
}

function measure(label: string, n: number, fn: () => number) {
  fn(); // warm-up: caches (helper build, page cache), not counted
  const samples: number[] = [];
  for (let i = 0; i < n; i++) samples.push(fn());
  process.stderr.write(`${label}: ${JSON.stringify(stats(samples))}\n`);
  return stats(samples);
}

/** A bundle equivalent to the job: host /usr read-only under an empty root, `sh -c 'echo hello'`, no network. */
function crunBundle(): string {
  const bundle = join(work, "bundle");
  const rootfs = join(bundle, "rootfs");
  for (const d of ["usr", "proc", "dev", "tmp", "etc"]) mkdirSync(join(rootfs, d), { recursive: true });
  for (const l of ["bin", "lib", "lib64", "sbin"]) symlinkSync(`usr/${l}`, join(rootfs, l));
  spawnSync("crun", ["spec"], { cwd: bundle });
  const spec = JSON.parse(spawnSync("cat", [join(bundle, "config.json")], { encoding: "utf8" }).stdout) as {
    process: { args: string[]; terminal: boolean };
    root: { path: string; readonly: boolean };
    mounts: Array<Record<string, unknown>>;
  };
  spec.process.args = ["sh", "-c", "echo hello"];
  spec.process.terminal = false;
  spec.root = { path: "rootfs", readonly: true };
  spec.mounts.push({ destination: "/usr", type: "bind", source: "/usr", options: ["rbind", "ro"] });
  writeFileSync(join(bundle, "config.json"), JSON.stringify(spec));
  return bundle;
}

try {
  const jobDir = join(work, "job");
  mkdirSync(jobDir);
  writeFileSync(join(jobDir, "deltaci.yml"), "jobs:\n  echo:\n    steps:\n      - run: echo hello\n");
  const bundle = crunBundle();
  const state = join(work, "crun-state");
  let id = 0;
  // crun 1.8 refuses this host's hybrid cgroups: run it where the cgroup2 mount is hidden (DESIGN.md).
  const crunScript = `umount -l /sys/fs/cgroup/unified 2>/dev/null; exec crun --root ${state} run -b ${bundle} "$0"`;
  const runOci = () => time(process.execPath, [cliBundle, "run", "--json"], { cwd: jobDir, phasesOf: "oci" });
  const [deltaciRunOci, baselineRunOci] = baseline === null
    ? [measure("deltaci run (oci)", runs, runOci), null]
    : measurePair(["deltaci run (oci)", "baseline deltaci run (oci)"], runs, runOci, () => time(process.execPath, [baseline, "run", "--json"], { cwd: jobDir, phasesOf: "baselineOci" }));
  const result = {
    bench: "cli-run",
    goalMs: 300,
    deltaciRunOci,
    ...(baseline === null ? {} : { baseline, baselineRunOci }),
    deltaciRunProcess: measure("deltaci run (process)", runs, () => time(process.execPath, [cliBundle, "run", "--json", "--isolation", "process"], { cwd: jobDir, phasesOf: "process" })),
    deltaciRunOciRunnerProcesses: measure("deltaci run (oci, runner child processes)", runs, () => time(process.execPath, [cliBundle, "run", "--json", "--runner-processes"], { cwd: jobDir, phasesOf: "ociRunnerProcesses" })),
    crunRun: measure("crun run", runs * 3, () => time("unshare", ["--mount", "--propagation", "private", "sh", "-c", crunScript, `bench-${process.pid}-${id++}`])),
    shEcho: measure("sh -c echo", runs * 3, () => time("sh", ["-c", "echo hello"])),
    cliStartBundle: measure("deltaci --version (bundle)", runs, () => time(process.execPath, [cliBundle, "--version"])),
    cliStartTsx: measure("deltaci --version (tsx)", runs, () => time(process.execPath, [bin, "--version"], { env: { DELTACI_FROM_SOURCE: "1" } })),
    nodeStart: measure("node -e 0", runs, () => time(process.execPath, ["-e", "0"])),
    /** Median ms since the CLI process started at which each phase of `deltaci run` ended. */
    phasesP50Ms: Object.fromEntries(Object.entries(phases).map(([k, marks]) => [k, Object.fromEntries(Object.entries(marks).map(([m, xs]) => [m, median(xs)]))])),
    loadAverage: loadavg().map((x) => Math.round(x * 100) / 100),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
