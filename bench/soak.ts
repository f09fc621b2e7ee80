/**
 * The fleet soak (test/support/soak.ts) at full size: `tsx bench/soak.ts --isolation process
 * --jobs 300 --runs 3`. Runners SIGKILLed every 0.6–0.9 s, the server SIGKILLed and restarted
 * 3 times per run. Prints JSON: per run the outcome counts, kills and every problem found.
 */
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { createSoak, processRunnerMode, soakProblems } from "../test/support/soak.ts";

const { values } = parseArgs({
  options: {
    isolation: { type: "string", default: "process" }, jobs: { type: "string", default: "300" }, runs: { type: "string", default: "1" },
    "max-runners": { type: "string", default: "4" }, "server-kills": { type: "string", default: "3" }, keep: { type: "boolean", default: false },
  },
});
const isolation = values.isolation === "oci" ? "oci" : "process";
const runs = [];
for (let run = 0; run < Number(values.runs); run++) {
  const soak = await createSoak({
    isolation, mode: processRunnerMode, jobs: Number(values.jobs), maxRunners: Number(values["max-runners"]), minIdle: 2,
    killEveryMs: [600, 900], serverKills: Number(values["server-kills"]), maxAttempts: 5, leaseTtl: "3s", timeoutMs: 30 * 60_000,
    log: (m) => process.stderr.write(`[run ${run}] ${m}\n`),
  });
  let keep = values.keep;
  try {
    const r = await soak.run();
    const states: Record<string, number> = {};
    for (const j of r.jobs) states[j.status.state] = (states[j.status.state] ?? 0) + 1;
    const retried = r.jobs.filter((j) => j.status.attempts.length > 1).length;
    const problems = soakProblems(r);
    keep ||= problems.length > 0;
    runs.push({ run, states, retried, runnerKills: r.runnerKills, serverKills: r.serverKills, forkedSeen: r.forkedSeen, wallMs: r.wallMs, problems, dir: keep ? soak.dir : undefined });
  } catch (err) {
    keep = true;
    throw err;
  } finally {
    await soak.cleanup(keep);
  }
  process.stderr.write(`${JSON.stringify(runs.at(-1))}\n`);
}
process.stdout.write(`${JSON.stringify({ isolation, mode: processRunnerMode.name, jobs: Number(values.jobs), runs, loadavg: loadavg() }, null, 2)}\n`);
