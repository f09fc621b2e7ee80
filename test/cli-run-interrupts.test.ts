/**
 * `deltaci run` and Ctrl-C timing: whenever the second Ctrl-C lands (while the job is being
 * canceled, after it ended, while artifacts download or the stack closes), the summary is
 * printed exactly once and the exit code is 130. The delays sweep the window after the step
 * acknowledged SIGTERM, where an earlier version was killed mid-teardown (no summary at all).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { killOnExit, startCli, tempDir } from "./cli-helpers.ts";

const JOB = "jobs:\n  stubborn:\n    steps:\n      - run: trap 'echo got-term' TERM; echo started; for i in $(seq 1 600); do sleep 0.2; done\n";

for (const delayMs of [0, 60, 120, 180, 240, 320]) {
  void test(`two Ctrl-C, the second ${delayMs} ms after the step saw SIGTERM: one summary, exit 130`, async (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, "deltaci.yml"), JOB);
    const run = startCli(["run", "--isolation", "process"], { cwd: dir });
    killOnExit(t, run);
    await run.waitFor(/^started$/m);
    run.child.kill("SIGINT");
    await run.waitFor("got-term");
    await new Promise((r) => setTimeout(r, delayMs));
    if (run.child.exitCode === null) run.child.kill("SIGINT");
    const r = await run.result;
    assert.equal(r.signal, null, `killed by ${r.signal}:\n${r.stdout}${r.stderr}`);
    assert.equal(r.code, 130, r.stdout + r.stderr);
    assert.equal(r.stdout.match(/^Summary$/gm)?.length ?? 0, 1, r.stdout);
    assert.match(r.stdout, /⊘ stubborn +canceled/);
  });
}
