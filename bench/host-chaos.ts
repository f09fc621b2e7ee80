/**
 * Chaos figure of the runner host: `kill -9` of the host in the middle of a burst of N oci jobs
 * (`deltaci controller --runner-mode session` in this process, the server on loopback, the host a
 * real process). Every job must end succeeded after a retry; we count the retries and the wall
 * time against a burst without a kill in the same run (the baseline), then stop the controller and
 * look for leftovers: processes, containers, mounts, loop devices, cgroups of the slots.
 * Prints one JSON document. Usage: tsx bench/host-chaos.ts [--jobs 12] [--max-runners 4]
 */
import { randomInt } from "node:crypto";
import { chmod, readdir, readFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { controllerOptionsFromFlags, startLocalController } from "../src/cli/commands/controller.ts";
import type { JobStatus } from "../src/protocol/schemas.ts";
import { alive, startHarness, type Harness } from "../test/controller-harness.ts";
import { leftoversUnder } from "../test/support/fleet-leftovers.ts";

const { values: args } = parseArgs({ options: { jobs: { type: "string", default: "12" }, "max-runners": { type: "string", default: "4" } } });
const jobs = Number(args.jobs);

/** Pids of the live runner hosts, from the controller's state files. */
async function hostPids(workRoot: string): Promise<number[]> {
  const dir = join(workRoot, "controller");
  const out: number[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const st = await readFile(join(dir, name, "state.json"), "utf8").then((t) => JSON.parse(t) as { pid: number }, () => null);
    if (st && (await alive(st.pid))) out.push(st.pid);
  }
  return out;
}

async function burst(h: Harness, tag: string, kill: boolean): Promise<Record<string, unknown>> {
  const t0 = performance.now();
  const ids: string[] = [];
  for (let i = 0; i < jobs; i++) ids.push(await h.submit({ name: `${tag}${i}`, steps: [{ name: "s", run: `sleep 1; echo "job ${i}"` }] }));
  let killedAtMs: number | null = null;
  let runningAtKill = 0;
  if (kill) {
    // mid-burst: once a few jobs finished and others are running
    await h.waitFor("jobs under way", async () => {
      const st = await Promise.all(ids.map((id) => h.job(id)));
      return st.filter((j) => j.state === "succeeded").length >= 2 && st.some((j) => j.state === "running");
    }, 300_000);
    runningAtKill = (await Promise.all(ids.map((id) => h.job(id)))).filter((j) => j.state === "running").length;
    const pids = await hostPids(h.workRoot);
    for (const pid of pids) process.kill(pid, "SIGKILL");
    killedAtMs = performance.now() - t0;
  }
  const done: JobStatus[] = await Promise.all(ids.map((id) => h.waitJob(id, undefined, 600_000)));
  const byState: Record<string, number> = {};
  for (const j of done) byState[j.state] = (byState[j.state] ?? 0) + 1;
  return {
    wallS: +((performance.now() - t0) / 1000).toFixed(1), states: byState,
    retries: done.reduce((n, j) => n + j.attempts.length - 1, 0), jobsRetried: done.filter((j) => j.attempts.length > 1).length,
    ...(kill ? { killedAtS: +((killedAtMs ?? 0) / 1000).toFixed(1), runningAtKill } : {}),
  };
}

const h = await startHarness({ leaseTtlMs: 3000 });
try {
  await chmod(h.dir, 0o711);
  const ctl = await startLocalController(controllerOptionsFromFlags({
    maxRunners: args["max-runners"], minIdle: "2", pool: [], isolation: "oci", workRoot: h.workRoot, runnerIdleTimeout: "2m", idleGrace: "2s",
    slotBase: String(randomInt(30_000, 50_000)), runnerMode: "session",
  }, { serverUrl: h.server.url, controllerToken: h.server.controllerToken }), pino({ level: "silent" }));
  let baseline: Record<string, unknown>;
  let chaos: Record<string, unknown>;
  try {
    baseline = await burst(h, "base", false);
    chaos = await burst(h, "chaos", true);
  } finally {
    await ctl.stop({ runners: "drain", timeoutMs: 60_000 });
  }
  const left = await leftoversUnder(h.dir, h.workRoot);
  console.log(JSON.stringify({
    bench: "host-chaos", isolation: "oci", runnerMode: "session", jobs, maxRunners: Number(args["max-runners"]), leaseTtlMs: 3000,
    baseline, chaos, leftovers: left, nothingLeft: Object.values(left).every((l) => l.length === 0),
    loadavg: loadavg().map((l) => +l.toFixed(2)),
  }, null, 1));
} finally {
  await h.cleanup();
}
