/**
 * Runners that crash at start: one clear error, then exponential backoff per pool — no tight
 * respawn loop, never more runners than the limits. Real server; the "runner" is a command that
 * fails at once (a stand-in for a bad configuration). Time for the backoff is a controllable
 * clock: frozen, a blocked pool must stay blocked however often the loop runs.
 */
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { systemClock, type Clock } from "../src/base/clock.ts";
import { startController } from "../src/controller/index.ts";
import { startHarness } from "./controller-harness.ts";

/** A real server and a controller whose runners (or runner host) exit at start; time is frozen until advanced. */
async function crashingFleet(t: TestContext, runnerMode: "process" | "session") {
  const h = await startHarness();
  t.after(() => h.cleanup());
  let frozenAt = Date.now();
  const clock: Clock = { now: () => frozenAt, sleep: (ms, signal) => systemClock.sleep(ms, signal) };
  const logs: Array<{ level: number; msg: string; pool?: string }> = [];
  const logger = pino({ level: "debug" }, { write: (line: string) => void logs.push(JSON.parse(line)) });
  const crashing = { command: process.execPath, args: ["-e", "console.error('crun: executable file not found'); process.exit(3)", "--"] };
  const pool = { os: process.platform, arch: process.arch, labels: [] as string[], resources: { cpus: 8, memoryMiB: 8192, diskMiB: 8192 }, minIdle: 0, isolation: "process" as const };
  const ctl = await startController(
    {
      serverUrl: h.server.url, controllerToken: h.server.controllerToken, workRoot: h.workRoot, maxRunners: 2,
      pools: [{ ...pool, name: "broken", max: 2 }], crashBackoffBaseMs: 1000, crashBackoffMaxMs: 60_000, tickMs: 20, runnerMode,
    },
    { command: crashing, clock, logger },
  );
  t.after(() => ctl.stop({ runners: "terminate" }));
  return { h, ctl, logs, freeze: { advance: (ms: number) => void (frozenAt += ms) } };
}

void test("a runner that crashes at start backs its pool off with one error, within the limits", async (t) => {
  const { h, ctl, logs, freeze } = await crashingFleet(t, "process");
  for (let i = 0; i < 5; i++) await h.submit({ steps: [{ name: "s", run: "true" }] });

  const exits = async () => {
    const m = await ctl.metrics.exits.get();
    return m.values.filter((v) => v.labels.outcome === "start_crash").reduce((s, v) => s + v.value, 0);
  };
  const launches = async () => (await ctl.metrics.decisions.get()).values.filter((v) => v.labels.kind === "launch").reduce((s, v) => s + v.value, 0);
  await h.waitFor("the first crashes", async () => (await exits()) >= 1);
  const launchedBefore = await launches();
  assert.ok(launchedBefore >= 1 && launchedBefore <= 2, `launched ${launchedBefore} (limit 2)`);
  // many more reconciles with time frozen: the pool stays in backoff
  for (let i = 0; i < 20; i++) await ctl.settled();
  await h.waitFor("all launched runners to exit", () => ctl.provider.list().length === 0);
  for (let i = 0; i < 5; i++) await ctl.settled();
  assert.equal(await launches(), launchedBefore, "no launch while the pool backs off");
  const errors = logs.filter((l) => l.level >= 50);
  assert.equal(errors.length, 1, `one clear error, got: ${JSON.stringify(errors)}`);
  assert.match(errors[0]?.msg ?? "", /exited at start \(exit code 3\)/);
  assert.match(JSON.stringify(errors[0]), /crun: executable file not found/, "the error shows the runner's own last words");
  const backoff = (await ctl.metrics.backoff.get()).values.find((v) => v.labels.pool === "broken")?.value ?? 0;
  assert.ok(backoff > 0, "backoff is visible in /metrics");

  // time passes beyond the backoff: exactly one more round of launches, then a longer backoff
  freeze.advance(120_000);
  await h.waitFor("a launch after the backoff", async () => (await launches()) > launchedBefore);
  await h.waitFor("that runner to crash too", async () => (await exits()) >= launchedBefore + 1);
  await h.waitFor("all launched runners to exit", () => ctl.provider.list().length === 0);
  const afterSecond = await launches();
  for (let i = 0; i < 10; i++) await ctl.settled();
  assert.equal(await launches(), afterSecond);
  assert.equal(logs.filter((l) => l.level >= 50).length, 1, "still one error: later crashes of the streak are not repeated at error level");
});

void test("a runner host that crashes at start: one error with the host's last words, the pool backs off", async (t) => {
  const { h, ctl, logs, freeze } = await crashingFleet(t, "session");
  for (let i = 0; i < 3; i++) await h.submit({ steps: [{ name: "s", run: "true" }] });
  const launches = async () => (await ctl.metrics.decisions.get()).values.filter((v) => v.labels.kind === "launch").reduce((s, v) => s + v.value, 0);
  const backoff = async () => (await ctl.metrics.backoff.get()).values.find((v) => v.labels.pool === "broken")?.value ?? 0;
  await h.waitFor("the pool to back off", async () => (await backoff()) > 0);
  const launchedBefore = await launches();
  for (let i = 0; i < 20; i++) await ctl.settled();
  assert.equal(await launches(), launchedBefore, "no launch while the pool backs off");
  const errors = logs.filter((l) => l.level >= 50);
  assert.equal(errors.length, 1, `one clear error, got: ${JSON.stringify(errors)}`);
  assert.match(errors[0]?.msg ?? "", /the runner host did not start: it exited \(code 3\)/);
  assert.match(JSON.stringify(errors[0]), /crun: executable file not found/, "the error shows the host's own last words");
  assert.equal(ctl.provider.list().length, 0, "no runner is left waiting on a dead host");
  freeze.advance(120_000);
  await h.waitFor("a launch after the backoff", async () => (await launches()) > launchedBefore);
  for (let i = 0; i < 10; i++) await ctl.settled();
  assert.equal(logs.filter((l) => l.level >= 50).length, 1, "still one error: later crashes of the streak are not repeated at error level");
});
