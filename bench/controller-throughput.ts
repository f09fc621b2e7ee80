/**
 * Throughput: N trivial sandboxed jobs (`true`), at most 8 runners (one job per runner process,
 * as the runner is built): jobs per second from the first submit to the last job succeeded,
 * and CPU seconds per job of the whole process tree (this process = server + controller, plus
 * every runner), from a cpuacct cgroup around it. Job containers run in their own cgroups, so
 * the steps' own CPU (here `true`) is not counted. Baseline in the same run: what starting the
 * runner process alone costs (bundled CLI `--version`) and the runner-bound ceiling it implies.
 * With `--in-process`, runners run inside this process (the CLI's in-process provider, what
 * `deltaci run` uses): no process start per job.
 * Usage: tsx bench/controller-throughput.ts [jobs=500] [maxRunners=8] [isolation=oci|process] [--runner=cli|runner-only] [--in-process]
 */
import { cpus, loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { bundledCli, cpuCgroup, crunAvailable, runnerCommandFromArgv, runnerOnlyBundle, spec, startStack, timeCommand } from "./lib/controller-bench.ts";

const pos = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const N = Number(pos[0] ?? 500);
const maxRunners = Number(pos[1] ?? 8);
const isolation = (pos[2] ?? (crunAvailable() ? "oci" : "process")) as "oci" | "process";

async function main() {
  const loadAtStart = loadavg();
  const { name: runnerEntry, command } = await runnerCommandFromArgv(process.argv);
  const runnerStart = timeCommand(command.command, [...command.args, "--version"], 10);
  const other = runnerEntry === "cli" ? await runnerOnlyBundle() : await bundledCli();
  const otherStart = timeCommand(other.command, [...other.args, "--version"], 10);
  const cg = await cpuCgroup();
  const inProcess = process.argv.includes("--in-process");
  const s = await startStack({ isolation, maxRunners, minIdle: maxRunners, command, inProcess });
  try {
    await s.until("warm runners", () => s.controller.provider.list().filter((r) => r.state === "idle").length >= maxRunners, 300_000);
    const cpu0 = (await cg?.seconds()) ?? NaN;
    const t0 = performance.now();
    const launches0 = s.launches.length;
    const ids: string[] = [];
    const submitters = Array.from({ length: 8 }, async (_, w) => {
      for (let i = w; i < N; i += 8) ids.push(await s.submit(spec(`tp-${i}`, "true")));
    });
    await Promise.all(submitters);
    const submittedMs = performance.now() - t0;
    await s.until("all jobs finished", async () => {
      const done = (await s.serverMetric('deltaci_jobs{state="succeeded"}')) + (await s.serverMetric('deltaci_jobs{state="failed"}')) + (await s.serverMetric('deltaci_jobs{state="errored"}'));
      return done >= N;
    }, 30 * 60_000);
    const wallS = (performance.now() - t0) / 1000;
    const cpuS = ((await cg?.seconds()) ?? NaN) - cpu0;
    const succeeded = await s.serverMetric('deltaci_jobs{state="succeeded"}');
    process.stdout.write(JSON.stringify({
      bench: "controller-throughput", goal: "≥ 40 jobs/s", jobs: N, maxRunners, isolation, runners: inProcess ? "in-process" : `processes (${runnerEntry} bundle)`, succeeded,
      jobsPerSecond: Math.round((N / wallS) * 100) / 100, wallSeconds: Math.round(wallS * 100) / 100, submitSeconds: Math.round(submittedMs) / 1000,
      cpuSecondsPerJob: Math.round((cpuS / N) * 1000) / 1000, cpuSecondsTotal: Math.round(cpuS * 100) / 100,
      runnersLaunched: s.launches.length - launches0,
      baseline: {
        runnerProcessStartMs: { [runnerEntry]: runnerStart, [runnerEntry === "cli" ? "runner-only" : "cli"]: otherStart, nodeBare: timeCommand(process.execPath, ["-e", "0"], 10) },
        note: "each job needs one runner process start; on this machine's cores the process starts alone bound throughput at about cores / (CPU s per start)",
      },
      machine: { cpus: cpus().length, loadavgAtStart: loadAtStart, loadavgAtEnd: loadavg() },
    }) + "\n");
  } finally {
    await s.close();
    await cg?.close();
  }
}

await main();
process.exit(0);
