/**
 * The controller end to end: real server on loopback, real `deltaci runner` processes (process
 * isolation: these tests are about scaling, not sandboxing), scaling on queue depth.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { writeFile } from "node:fs/promises";
import { selfCommand } from "../src/config/paths.ts";
import { startController, type RunningController } from "../src/controller/index.ts";
import { hostPoolDefaults } from "../src/config/controller-config.ts";
import type { Pool } from "../src/controller/types.ts";
import { startHarness, type Harness } from "./controller-harness.ts";

const host = hostPoolDefaults("/tmp");
const pool = (name: string, o: Partial<Pool> = {}): Pool => ({ name, ...host, labels: [], max: 2, minIdle: 0, isolation: "process", ...o });

async function controller(h: Harness, pools: Pool[], maxRunners: number, o: { idleGraceMs?: number; metrics?: boolean } = {}): Promise<RunningController> {
  return startController(
    {
      serverUrl: h.server.url, controllerToken: h.server.controllerToken, workRoot: h.workRoot, pools, maxRunners, idleGraceMs: o.idleGraceMs ?? 500, runnerIdleTimeoutMs: 120_000,
      metricsListen: o.metrics ? { host: "127.0.0.1", port: 0 } : null,
    },
    { command: selfCommand(), logger: h.logger },
  );
}

/** Samples the runners a controller has, all the time, to check limits were never exceeded. */
function sampler(ctl: RunningController) {
  const maxByPool = new Map<string, number>();
  let maxTotal = 0;
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      const list = ctl.provider.list();
      maxTotal = Math.max(maxTotal, list.length);
      for (const name of new Set(list.map((r) => r.pool))) maxByPool.set(name, Math.max(maxByPool.get(name) ?? 0, list.filter((r) => r.pool === name).length));
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  return { maxByPool, get maxTotal() { return maxTotal; }, stop: async () => { stop = true; await loop; } };
}

const gated = (gate: string) => [{ name: "wait", run: `while [ ! -e ${gate} ]; do sleep 0.02; done; echo done` }];

void test("a burst of jobs scales up to the limit, never beyond, and back down to min-idle", async (t) => {
  const h = await startHarness();
  t.after(() => h.cleanup());
  const ctl = await controller(h, [pool("default", { max: 3, minIdle: 1 })], 3);
  t.after(() => ctl.stop({ runners: "terminate" }));
  const s = sampler(ctl);
  t.after(() => s.stop());
  await h.waitFor("the min-idle runner", () => ctl.provider.list().some((r) => r.state === "idle"));

  const gate = join(h.dir, "gate");
  const ids: string[] = [];
  for (let i = 0; i < 8; i++) ids.push(await h.submit({ name: `burst-${i}`, steps: gated(gate) }));
  // three jobs run at once (the limit), the other five wait
  await h.waitFor("3 running jobs", async () => (await Promise.all(ids.map((id) => h.job(id)))).filter((j) => j.state === "running").length === 3);
  assert.equal(ctl.provider.list().length, 3);
  await writeFile(gate, "");
  for (const id of ids) assert.equal((await h.waitJob(id)).state, "succeeded", `job ${id}`);
  await h.waitFor("back down to one idle runner", () => {
    const l = ctl.provider.list();
    return l.length === 1 && l[0]?.state === "idle";
  });
  await s.stop();
  assert.equal(s.maxTotal, 3, "reached the limit and never exceeded it");
  const launches = (await ctl.metrics.decisions.get()).values.filter((v) => v.labels.kind === "launch").reduce((n, v) => n + v.value, 0);
  assert.ok(launches <= 8 + 2, `no herd: ${launches} launches for 8 jobs and min-idle 1`);
  const runners = (await ctl.metrics.registry.getSingleMetricAsString("deltaci_controller_runners"));
  assert.match(runners, /deltaci_controller_runners\{pool="default",state="idle"\} 1/);
});

void test("per-pool quotas and label routing", async (t) => {
  const h = await startHarness();
  t.after(() => h.cleanup());
  const ctl = await controller(h, [pool("gpu", { labels: ["gpu"], max: 2 }), pool("plain", { max: 1 })], 3);
  t.after(() => ctl.stop({ runners: "terminate" }));
  const s = sampler(ctl);
  t.after(() => s.stop());
  const gate = join(h.dir, "gate");
  const gpuJobs: string[] = [];
  for (let i = 0; i < 3; i++) gpuJobs.push(await h.submit({ name: `gpu-${i}`, runsOn: { labels: ["gpu"] }, steps: gated(gate) }));
  const plainJobs: string[] = [];
  for (let i = 0; i < 2; i++) plainJobs.push(await h.submit({ name: `plain-${i}`, steps: gated(gate) }));
  // gpu jobs take both gpu runners; plain jobs the one plain runner
  await h.waitFor("3 running", async () => (await Promise.all([...gpuJobs, ...plainJobs].map((id) => h.job(id)))).filter((j) => j.state === "running").length === 3);
  const byPool = (name: string) => ctl.provider.list().filter((r) => r.pool === name).length;
  assert.equal(byPool("gpu"), 2);
  assert.equal(byPool("plain"), 1);
  const running = await Promise.all([...gpuJobs, ...plainJobs].map((id) => h.job(id)));
  assert.equal(running.filter((j) => j.name.startsWith("gpu") && j.state === "running").length, 2);
  assert.equal(running.filter((j) => j.name.startsWith("plain") && j.state === "running").length, 1);
  await writeFile(gate, "");
  for (const id of [...gpuJobs, ...plainJobs]) assert.equal((await h.waitJob(id)).state, "succeeded");
  await s.stop();
  assert.ok((s.maxByPool.get("gpu") ?? 0) <= 2 && (s.maxByPool.get("plain") ?? 0) <= 1, `per-pool maxima ${JSON.stringify([...s.maxByPool])}`);
  assert.ok(s.maxTotal <= 3);
});

void test("a job no pool can serve is reported unschedulable, and nothing is launched for it", async (t) => {
  const h = await startHarness();
  t.after(() => h.cleanup());
  const ctl = await controller(h, [pool("linux", { labels: ["linux"], max: 2 })], 2, { metrics: true });
  t.after(() => ctl.stop({ runners: "terminate" }));
  const id = await h.submit({ name: "windows-job", runsOn: { labels: ["windows"] }, steps: [{ name: "s", run: "true" }] });
  const big = await h.submit({ name: "huge-job", runsOn: { labels: [] }, steps: [{ name: "s", run: "true" }], limits: { timeoutMs: 60_000, cpus: 1000, memoryMiB: 256, diskMiB: 256, pids: 64, logMiB: 1 } });
  const j = await h.waitJob(id, (s) => s.unschedulable !== null);
  assert.equal(j.state, "queued");
  assert.match(j.unschedulable ?? "", /windows/);
  assert.match((await h.waitJob(big, (s) => s.unschedulable !== null)).unschedulable ?? "", /cpus/);
  await h.waitFor("the controller's own count", async () => (await ctl.metrics.unschedulable.get()).values[0]?.value === 2);
  await ctl.settled();
  assert.equal(ctl.provider.list().length, 0, "no runner for a job nobody can serve");
  // a servable job still runs next to them
  const ok = await h.submit({ name: "linux-job", runsOn: { labels: ["linux"] }, steps: [{ name: "s", run: "true" }] });
  assert.equal((await h.waitJob(ok)).state, "succeeded");
  assert.equal((await h.job(id)).state, "queued");
  // the same figures over HTTP, Prometheus text format
  assert.ok(ctl.metricsUrl);
  const text = await (await fetch(ctl.metricsUrl)).text();
  assert.match(text, /^deltaci_controller_unschedulable_jobs 2$/m);
  assert.match(text, /^deltaci_controller_scale_decisions_total\{pool="linux",kind="launch",reason="demand"\} [1-9]/m);
  assert.match(text, /^deltaci_controller_spawn_seconds_count\{pool="linux"\} [1-9]/m);
  assert.match(text, /^deltaci_controller_runners\{pool="linux",state="idle"\} \d+$/m);
});
