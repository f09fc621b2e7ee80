import { test } from "node:test";
import assert from "node:assert/strict";
import { planScaling, type ScalingInput } from "./scaling.ts";
import { poolCanServe, eligiblePools } from "./matching.ts";
import type { DemandEntry, Pool, RunnerState, RunnerView } from "./types.ts";
import type { RequirementSet } from "../protocol/schemas.ts";

const res = { cpus: 2, memoryMiB: 2048, diskMiB: 4096 };
const pool = (name: string, o: Partial<Pool> = {}): Pool => ({ name, os: "linux", arch: "x64", labels: [], resources: res, max: 4, minIdle: 0, isolation: "process", ...o });
const req = (labels: string[] = [], o: Partial<RequirementSet> = {}): RequirementSet => ({ os: null, arch: null, labels, resources: { cpus: 1, memoryMiB: 512, diskMiB: 1024 }, ...o });
const demand = (queued: number, labels: string[] = [], running = 0, o: Partial<RequirementSet> = {}): DemandEntry => ({ requirements: req(labels, o), queued, running });
let n = 0;
const runner = (poolName: string, state: RunnerState, sinceMs = 0): RunnerView => ({ id: `r${++n}`, pool: poolName, state, sinceMs });
const plan = (o: Partial<ScalingInput>) =>
  planScaling({ nowMs: 100_000, demand: [], pools: [pool("default")], runners: [], policy: { maxRunners: 8, idleGraceMs: 1000 }, ...o });
const launched = (p: ReturnType<typeof plan>, name?: string) =>
  p.decisions.filter((d) => d.kind === "launch" && (name === undefined || d.pool === name)).reduce((s, d) => s + (d.kind === "launch" ? d.count : 0), 0);
const drained = (p: ReturnType<typeof plan>) => p.decisions.filter((d) => d.kind === "drain").map((d) => (d.kind === "drain" ? d.runnerId : ""));

void test("matching: labels, os, arch and resources", () => {
  const p = pool("p", { labels: ["linux", "gpu"] });
  assert.ok(poolCanServe(p, req(["gpu"])));
  assert.ok(poolCanServe(p, req([])));
  assert.ok(!poolCanServe(p, req(["arm"])));
  assert.ok(poolCanServe(p, req([], { os: "linux", arch: "x64" })));
  assert.ok(!poolCanServe(p, req([], { os: "windows" })));
  assert.ok(!poolCanServe(p, req([], { arch: "arm64" })));
  assert.ok(!poolCanServe(p, req([], { resources: { cpus: 4, memoryMiB: 1, diskMiB: 1 } })));
  assert.ok(!poolCanServe(p, req([], { resources: { cpus: 1, memoryMiB: 4096, diskMiB: 1 } })));
  assert.ok(!poolCanServe(p, req([], { resources: { cpus: 1, memoryMiB: 1, diskMiB: 8192 } })));
  // most general pool first
  const pools = [pool("gpu", { labels: ["gpu"] }), pool("plain")];
  assert.deepEqual(eligiblePools(pools, req([])).map((x) => x.name), ["plain", "gpu"]);
  assert.deepEqual(eligiblePools(pools, req(["gpu"])).map((x) => x.name), ["gpu"]);
});

void test("no demand, no runners: nothing to do", () => {
  assert.deepEqual(plan({}).decisions, []);
});

void test("a burst launches one runner per queued job, capped by the pool and global limits (no herd)", () => {
  const p = plan({ demand: [demand(500)], pools: [pool("default", { max: 6 })] });
  assert.equal(launched(p), 6);
  assert.equal(p.waiting, 494);
  const g = plan({ demand: [demand(500)], pools: [pool("a", { max: 100 })], policy: { maxRunners: 8, idleGraceMs: 0 } });
  assert.equal(launched(g), 8);
  const small = plan({ demand: [demand(3)], pools: [pool("default", { max: 100 })] });
  assert.equal(launched(small), 3);
});

void test("runners already starting or idle are counted before launching more", () => {
  const runners = [runner("default", "starting"), runner("default", "idle", 99_900), runner("default", "busy")];
  const p = plan({ demand: [demand(3, [], 1)], runners, pools: [pool("default", { max: 10 })] });
  assert.equal(launched(p), 1);
  // repeated evaluation with the launched runner now starting: stable, nothing more
  const again = plan({ demand: [demand(3, [], 1)], runners: [...runners, runner("default", "starting")], pools: [pool("default", { max: 10 })] });
  assert.equal(launched(again), 0);
  assert.deepEqual(drained(again), []);
});

void test("limits count draining and busy runners and are never exceeded", () => {
  const runners = [runner("default", "busy"), runner("default", "busy"), runner("default", "draining")];
  const p = plan({ demand: [demand(10, [], 2)], runners, pools: [pool("default", { max: 4 })] });
  assert.equal(launched(p), 1);
  const full = plan({ demand: [demand(10, [], 2)], runners: [...runners, runner("default", "busy")], pools: [pool("default", { max: 4 })] });
  assert.equal(launched(full), 0);
  // a runner of an unknown pool counts against the global limit
  const g = plan({ demand: [demand(10)], runners: [runner("gone", "busy")], pools: [pool("default", { max: 10 })], policy: { maxRunners: 3, idleGraceMs: 0 } });
  assert.equal(launched(g), 2);
});

void test("limits hold for arbitrary inputs (property check)", () => {
  let seed = 7;
  const rnd = (k: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % k);
  const states: RunnerState[] = ["starting", "idle", "busy", "draining"];
  for (let i = 0; i < 2000; i++) {
    const pools = [pool("a", { max: rnd(5), minIdle: rnd(3) }), pool("b", { labels: ["x"], max: rnd(5), minIdle: rnd(3) }), pool("c", { labels: ["x", "y"], max: rnd(5) })];
    const runners = Array.from({ length: rnd(12) }, () => runner(["a", "b", "c"][rnd(3)] as string, states[rnd(4)] as RunnerState, rnd(200_000)));
    const maxRunners = rnd(12);
    const p = plan({ pools, runners, demand: [demand(rnd(20), [], rnd(4)), demand(rnd(20), ["x"], rnd(3)), demand(rnd(5), ["z"])], policy: { maxRunners, idleGraceMs: 1000 } });
    const before = runners.length;
    assert.ok(launched(p) === 0 || before + launched(p) <= maxRunners, `global limit: ${before}+${launched(p)} > ${maxRunners}`);
    for (const pl of pools) {
      const alive = runners.filter((r) => r.pool === pl.name).length;
      const l = launched(p, pl.name);
      assert.ok(l === 0 || alive + l <= pl.max, `pool ${pl.name}: ${alive}+${l} > ${pl.max}`);
    }
    for (const id of drained(p)) assert.equal(runners.find((r) => r.id === id)?.state, "idle");
    assert.equal(p.unschedulable.length, p.unschedulable.length > 0 ? 1 : 0);
  }
});

void test("min-idle keeps warm runners and a job claiming one launches a replacement", () => {
  const p = plan({ pools: [pool("default", { minIdle: 2 })] });
  assert.deepEqual(p.decisions, [{ kind: "launch", pool: "default", count: 2, reason: "min-idle" }]);
  const idle = [runner("default", "idle"), runner("default", "idle")];
  assert.deepEqual(plan({ pools: [pool("default", { minIdle: 2 })], runners: idle }).decisions, []);
  const claimed = plan({ pools: [pool("default", { minIdle: 2 })], runners: idle, demand: [demand(1)] });
  assert.deepEqual(claimed.decisions, [{ kind: "launch", pool: "default", count: 1, reason: "min-idle" }]);
  // min-idle never breaks the limit
  assert.equal(launched(plan({ pools: [pool("default", { minIdle: 5, max: 3 })] })), 3);
});

void test("surplus idle runners are drained down to min-idle after the grace period, oldest first", () => {
  const old1 = runner("default", "idle", 10_000);
  const old2 = runner("default", "idle", 20_000);
  const fresh = runner("default", "idle", 99_800);
  const p = plan({ pools: [pool("default", { minIdle: 2 })], runners: [fresh, old2, old1] });
  assert.deepEqual(drained(p), [old1.id]); // two kept as min-idle
  const within = plan({ pools: [pool("default")], runners: [fresh, old2, old1] });
  assert.deepEqual(drained(within), [old1.id, old2.id]); // the fresh one is within its grace
  const later = plan({ nowMs: 200_000, pools: [pool("default")], runners: [fresh, old2, old1] });
  assert.deepEqual(drained(later), [old1.id, old2.id, fresh.id]);
  // queued demand keeps them
  assert.deepEqual(drained(plan({ pools: [pool("default")], runners: [old1, old2], demand: [demand(2)] })), []);
  // starting, busy and draining runners are never drained
  assert.deepEqual(drained(plan({ pools: [pool("default")], runners: [runner("default", "starting"), runner("default", "busy"), runner("default", "draining")] })), []);
});

void test("an idle-looking runner that the server counts as running is neither drained nor counted as free", () => {
  // two runners look idle but the server says one job runs: only one can really be idle, and
  // which one is unknown, so neither is drained until the busy one shows (a drain would stop its job)
  const a = runner("default", "idle", 0);
  const b = runner("default", "idle", 0);
  const p = plan({ pools: [pool("default")], runners: [a, b], demand: [demand(0, [], 1)] });
  assert.deepEqual(drained(p), []);
  const known = plan({ pools: [pool("default")], runners: [a, { ...b, state: "busy" }], demand: [demand(0, [], 1)] });
  assert.deepEqual(drained(known), [a.id]);
  const q = plan({ pools: [pool("default")], runners: [a, b], demand: [demand(2, [], 1)] });
  assert.equal(launched(q), 1);
  assert.deepEqual(drained(q), []);
});

void test("label routing: each requirement set goes to a pool that can serve it; general pool preferred", () => {
  const pools = [pool("gpu", { labels: ["gpu"], max: 2 }), pool("plain", { max: 3 })];
  const p = plan({ pools, demand: [demand(5, ["gpu"]), demand(2)] });
  assert.equal(launched(p, "gpu"), 2);
  assert.equal(launched(p, "plain"), 2);
  assert.equal(p.waiting, 3);
  // plain jobs overflow into the gpu pool only when plain is full
  const o = plan({ pools, demand: [demand(5)] });
  assert.equal(launched(o, "plain"), 3);
  assert.equal(launched(o, "gpu"), 2);
  // constrained demand is served first: gpu jobs are not starved by plain overflow
  const c = plan({ pools, demand: [demand(5), demand(1, ["gpu"])] });
  assert.equal(launched(c, "gpu"), 2);
  assert.equal(launched(c, "plain"), 3);
  assert.equal(c.waiting, 1);
});

void test("unschedulable requirement sets are reported and launch nothing", () => {
  const p = plan({ pools: [pool("default", { labels: ["linux"] })], demand: [demand(2, ["windows"]), demand(1, [], 0, { resources: { cpus: 64, memoryMiB: 1, diskMiB: 1 } })] });
  assert.equal(launched(p), 0);
  assert.equal(p.unschedulable.length, 2);
  assert.equal(p.unschedulable.reduce((s, u) => s + u.queued, 0), 3);
});

void test("a pool in crash backoff launches nothing; others still do", () => {
  const pools = [pool("a", { max: 2, minIdle: 1 }), pool("b", { max: 2 })];
  const p = plan({ pools, demand: [demand(3)], blockedUntilMs: { a: 100_500 } });
  assert.equal(launched(p, "a"), 0);
  assert.equal(launched(p, "b"), 2);
  const after = plan({ nowMs: 101_000, pools, demand: [demand(3)], blockedUntilMs: { a: 100_500 } });
  assert.equal(launched(after, "a"), 2);
});
