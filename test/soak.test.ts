/**
 * The fleet soak, CI-sized: `deltaci up` as a real process, jobs with known output, a random
 * runner SIGKILLed every 0.6–0.9 s, the server (with its controller) SIGKILLed and restarted
 * twice (40 jobs with process isolation, 24 with oci). Every job ends `succeeded`, or `errored` only when every attempt was lost to the kills;
 * every succeeded job's log on the server is exactly its steps' output between the runner's
 * markers; after `deltaci up` stops, nothing is left (process, container, mount, loop device,
 * cgroup). A runner crash never fails another job. Runs once per isolation and runner mode
 * (process: a runner process is killed; session: the runner host, with all its sessions).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { projectRoot } from "../src/config/paths.ts";
import { createSoak, processRunnerMode, sessionRunnerMode, soakProblems, type RunnerMode } from "./support/soak.ts";

const modes: RunnerMode[] = [processRunnerMode, sessionRunnerMode];
/**
 * How often the runner process is killed: in session mode that is the host with every session in
 * it, and its successor needs a moment to start, so the kills are sparser (still several per run).
 */
const KILL_EVERY_MS = {
  process: { process: [600, 900], oci: [600, 900] },
  // an oci host prepares its backend and the controller reaps the dead host's slots first
  session: { process: [2_500, 4_000], oci: [5_000, 8_000] },
} as const;
/** CI-sized: an oci job costs a sandbox build on top of its runner's start. */
const JOBS = { process: 40, oci: 24 } as const;
/** In session mode a kill loses every session of the host: fewer oci jobs keep the run CI-sized. */
const SESSION_OCI_JOBS = 16;

// Runners start per job: from the bundle (as `scripts/setup.sh` leaves it), not through tsx.
execFileSync(process.execPath, [join(projectRoot(), "scripts", "build.mjs")], { stdio: "inherit" });

for (const mode of modes) {
  for (const isolation of ["process", "oci"] as const) {
    const jobs = mode.name === "session" && isolation === "oci" ? SESSION_OCI_JOBS : JOBS[isolation];
    void test(`soak (${isolation} isolation, ${mode.name} runners): random runner kills and server restarts fail no job`, { timeout: 300_000 }, async (t) => {
      const soak = await createSoak({
        isolation, mode, jobs, maxRunners: 4, minIdle: 2, killEveryMs: KILL_EVERY_MS[mode.name === "session" ? "session" : "process"][isolation], serverKills: 2, maxAttempts: 5, leaseTtl: "3s", timeoutMs: 240_000,
        log: (m) => t.diagnostic(m),
      });
      let failed = true;
      t.after(() => soak.cleanup(failed && process.env.DCI_TEST_KEEP === "1"));
      const r = await soak.run();
      const succeeded = r.jobs.filter((j) => j.status.state === "succeeded").length;
      const retried = r.jobs.filter((j) => j.status.attempts.length > 1).length;
      t.diagnostic(JSON.stringify({ succeeded, retried, runnerKills: r.runnerKills, forkedSpared: r.forkedSeen, wallMs: r.wallMs }));
      assert.deepEqual(soakProblems(r), []);
      assert.equal(r.serverKills, 2);
      assert.ok(retried > 0, "the kills reached running jobs (some were retried)");
      assert.ok(succeeded >= jobs / 2, `${succeeded} of ${jobs} succeeded`);
      failed = false;
    });
  }
}
