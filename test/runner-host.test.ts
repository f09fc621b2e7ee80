/**
 * Runner sessions in a warm runner host (`--runner-mode session`), end to end: the real server
 * on loopback, the real controller, a real `deltaci runner-host` process, real crun sandboxes.
 * One session per job (its own registration and runner id), host recycling with no failed job,
 * kill -9 of the host mid-burst (every job succeeds after a retry, nothing left behind), and a
 * restarted controller adopting the live host.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chmod, readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { pino } from "pino";
import { controllerOptionsFromFlags, startLocalController } from "../src/cli/commands/controller.ts";
import { RUNNER_HOST_NODE_FLAGS } from "../src/config/paths.ts";
import type { RunningController } from "../src/controller/index.ts";
import { alive, startHarness, type Harness } from "./controller-harness.ts";
import { cgroupDirs, crunIds, loopsUnder, mountsUnder } from "./support/leftovers.ts";

const slotBase = 30_000 + Math.floor(Math.random() * 20_000);

async function controller(h: Harness, over: Record<string, string> = {}): Promise<RunningController> {
  return startLocalController(controllerOptionsFromFlags({
    maxRunners: "2", minIdle: "0", pool: [], isolation: "oci", workRoot: h.workRoot, runnerIdleTimeout: "2m", idleGrace: "500ms",
    slotBase: String(slotBase), runnerMode: "session", ...over,
  }, { serverUrl: h.server.url, controllerToken: h.server.controllerToken }), pino({ level: process.env.DCI_TEST_LOG ?? "silent" }));
}

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

async function assertNothingLeft(h: Harness, slots: number): Promise<void> {
  assert.deepEqual(crunIds(`deltaci-s${slotBase}-`), [], "no container left");
  assert.deepEqual(mountsUnder(h.workRoot), [], "no mount left");
  assert.deepEqual(loopsUnder(h.workRoot), [], "no loop device left");
  for (let i = 0; i < slots; i++) assert.deepEqual(cgroupDirs(slotBase + i), [], `no cgroup left in slot ${slotBase + i}`);
  assert.deepEqual(await hostPids(h.workRoot), [], "no runner host left");
}

const steps = (i: number) => [{ name: "hello", run: `echo "job ${i} in $(hostname)"` }];

void test("session mode: each job is a session of its own in one warm host; recycled hosts lose no job; nothing left", async (t) => {
  const h = await startHarness();
  t.after(() => h.cleanup());
  await chmod(h.dir, 0o711);
  const ctl = await controller(h, { hostMaxSessions: "4" });
  t.after(() => ctl.stop({ runners: "terminate" }));
  const ids = [];
  for (let i = 0; i < 10; i++) ids.push(await h.submit({ name: `j${i}`, steps: steps(i) }));
  const jobs = await Promise.all(ids.map((id) => h.waitJob(id, undefined, 180_000)));
  for (const j of jobs) assert.equal(j.state, "succeeded", JSON.stringify(j.failure));
  const runnerIds = jobs.map((j) => j.attempts[0]?.runnerId);
  assert.equal(new Set(runnerIds).size, jobs.length, `one runner (session) per job: ${runnerIds.join(" ")}`);
  const hostLogs = (await readdir(join(h.workRoot, "controller"))).filter((d) => d.startsWith("host-"));
  assert.ok(hostLogs.length >= 2, `hosts were recycled after 4 sessions: ${hostLogs.join(" ")}`);
  await ctl.stop({ runners: "drain", timeoutMs: 30_000 });
  await assertNothingLeft(h, 4);
});

void test("session mode: kill -9 of the runner host mid-burst: every job succeeds after a retry, its slots are reaped", async (t) => {
  const h = await startHarness({ leaseTtlMs: 3000 });
  t.after(() => h.cleanup());
  await chmod(h.dir, 0o711);
  const ctl = await controller(h);
  t.after(() => ctl.stop({ runners: "terminate" }));
  const slow = [{ name: "slow", run: "sleep 2; echo done" }];
  const ids = [];
  for (let i = 0; i < 4; i++) ids.push(await h.submit({ name: `b${i}`, steps: slow }));
  await h.waitJob(ids[0] as string, (j) => j.state === "running", 120_000);
  const [pid] = await hostPids(h.workRoot);
  assert.ok(pid, "a runner host runs the sessions");
  const argv = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0");
  assert.deepEqual(argv.slice(1, 1 + RUNNER_HOST_NODE_FLAGS.length), [...RUNNER_HOST_NODE_FLAGS], `the host's node flags, before its script: ${argv.join(" ")}`);
  process.kill(pid, "SIGKILL");
  const jobs = await Promise.all(ids.map((id) => h.waitJob(id, undefined, 180_000)));
  for (const j of jobs) assert.equal(j.state, "succeeded", JSON.stringify(j.failure));
  assert.ok(jobs.some((j) => j.attempts.length > 1 && j.attempts[0]?.state === "lost"), "the killed host's jobs were retried");
  const [next] = await hostPids(h.workRoot);
  assert.ok(next !== undefined && next !== pid, "the controller started another host");
  await ctl.stop({ runners: "drain", timeoutMs: 30_000 });
  await assertNothingLeft(h, 2);
});

void test("session mode: a restarted controller adopts the live host and its busy session; the job finishes", async (t) => {
  const h = await startHarness();
  t.after(() => h.cleanup());
  await chmod(h.dir, 0o711);
  const first = await controller(h);
  // (a host path cannot gate a sandboxed step: the step outlasts the controller's restart instead)
  const id = await h.submit({ name: "long", steps: [{ name: "wait", run: "sleep 8; echo released" }] });
  await h.waitJob(id, (j) => j.state === "running", 120_000);
  const [pid] = await hostPids(h.workRoot);
  await first.stop(); // keeps its runners: the host and its session go on
  assert.ok(pid !== undefined && (await alive(pid)), "the host outlives its controller");
  const second = await controller(h);
  t.after(() => second.stop({ runners: "terminate" }));
  assert.equal((await second.metrics.adopted.get()).values[0]?.value, 1, "the busy session was adopted");
  assert.equal(second.provider.list()[0]?.state, "busy");
  const job = await h.waitJob(id, undefined, 120_000);
  assert.equal(job.state, "succeeded", JSON.stringify(job.failure));
  assert.equal(job.attempts.length, 1, "no retry: the adopted session reported its job");
  await second.stop({ runners: "drain", timeoutMs: 30_000 });
  assert.ok(!existsSync(join(h.workRoot, "controller", "host-0", "state.json")));
  await assertNothingLeft(h, 2);
});
