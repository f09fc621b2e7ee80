/**
 * One set of cases for the RunnerProvider seam (src/controller/provider.ts), run against every
 * implementation: runner processes (LocalProvider), sessions in a `deltaci runner-host` process
 * (HostProvider) and sessions in this process (InProcessProvider). The real server on loopback,
 * real runners, `process` isolation (CI-sized; the oci paths are covered by runner-host.test.ts
 * and controller-oci.test.ts). Each case drives the provider as the reconcile loop does
 * (launch, refresh + list, drain, terminate, onExit) and checks what it reports:
 *  - launch: the runner goes starting → idle (registered) → busy (leased one job) → exits 0 with
 *    its job succeeded, not requested, everBusy;
 *  - drain of an idle runner: it exits, requested, never busy; its job-less slot is clean;
 *  - drain of a busy runner (a drain races a lease on its way back): its job runs to its end;
 *  - terminate of a busy runner: it exits, requested; its step's process is gone; its slot is reaped;
 *  - after every exit: no job dir and no process of the runner left below the work root.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import { chmod, readdir } from "node:fs/promises";
import { join } from "node:path";
import { pino } from "pino";
import { systemClock } from "../src/base/clock.ts";
import { InProcessProvider } from "../src/cli/run/in-process-provider.ts";
import { defaultSlotReaper } from "../src/cli/commands/controller.ts";
import { selfCommand } from "../src/config/paths.ts";
import { HostProvider } from "../src/controller/host-provider.ts";
import { LocalProvider } from "../src/controller/local-provider.ts";
import { findProcessesByArg } from "../src/controller/proc.ts";
import type { RunnerExit, RunnerProvider } from "../src/controller/provider.ts";
import type { Pool, RunnerState } from "../src/controller/types.ts";
import { isJobDirName } from "../src/sandbox/job-names.ts";
import { ProcessSandboxFactory } from "../src/sandbox/process/process-sandbox.ts";
import { startHarness, type Harness } from "./controller-harness.ts";
import { processesUnder } from "./support/fleet-leftovers.ts";

const pool: Pool = { name: "p", os: "linux", arch: "x64", labels: [], resources: { cpus: 1, memoryMiB: 512, diskMiB: 1024 }, max: 2, minIdle: 0, isolation: "process" };
const logger = pino({ level: process.env.DCI_TEST_LOG ?? "silent" }, pino.destination(2));

type Make = (workRoot: string, slotBase: number) => RunnerProvider;

const implementations: Array<[string, Make]> = [
  ["LocalProvider (a process per runner)", (workRoot, slotBase) => new LocalProvider({
    workRoot, command: selfCommand(), runnerIdleTimeoutMs: 120_000, drainTimeoutMs: 20_000, slotBase, reaper: defaultSlotReaper([pool], logger), clock: systemClock, logger,
  })],
  ["HostProvider (sessions in a runner-host process)", (workRoot, slotBase) => new HostProvider({
    workRoot, command: selfCommand(), slotBase, slotsPerHost: 2, runnerIdleTimeoutMs: 120_000, maxSessions: 200, maxAgeMs: 3_600_000,
    startTimeoutMs: 60_000, drainTimeoutMs: 20_000, reaper: defaultSlotReaper([pool], logger), clock: systemClock, logger,
  })],
  ["InProcessProvider (sessions in this process)", (workRoot, slotBase) => new InProcessProvider({
    workRoot, slotBase, maxSlots: 2, sandboxFactory: new ProcessSandboxFactory({ clock: systemClock, logger }), clock: systemClock, logger, idleTimeoutMs: 120_000,
  })],
];

/** Job dirs left anywhere below the work root (a reaped slot has none). */
async function jobDirsBelow(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isDirectory() && isJobDirName(e.name)).map((e) => join(e.parentPath ?? e.path, e.name));
}

for (const [name, make] of implementations) {
  void describe(`RunnerProvider conformance: ${name}`, { timeout: 120_000 }, () => {
    let h: Harness;
    let provider: RunnerProvider;
    const exits: RunnerExit[] = [];
    /** Every distinct state each runner was listed in, in order. */
    const seen = new Map<string, RunnerState[]>();
    const poll = async () => {
      await provider.refresh();
      for (const r of provider.list()) {
        const states = seen.get(r.id) ?? [];
        if (states.at(-1) !== r.state) states.push(r.state);
        seen.set(r.id, states);
      }
    };
    const until = async <T>(what: string, probe: () => T | undefined | null | false, timeoutMs = 60_000): Promise<T> => {
      for (const deadline = Date.now() + timeoutMs; ; await new Promise((r) => setTimeout(r, 25))) {
        await poll();
        const v = probe();
        if (v !== undefined && v !== null && v !== false) return v;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(provider.list())}`);
      }
    };
    const launch = async () => {
      const [token] = (await h.api.call<{ tokens: string[] }>({ method: "POST", path: "/v1/controller/registrations", token: h.server.controllerToken, json: { count: 1, labels: [] } })).body.tokens;
      const rec = await provider.launch({ pool, registrationToken: token as string, serverUrl: h.server.url });
      assert.equal(rec.pool, pool.name);
      assert.equal(rec.adopted, false);
      return rec.id;
    };
    const stateOf = (id: string) => provider.list().find((r) => r.id === id)?.state;
    const exitOf = (id: string) => exits.find((e) => e.runner.id === id);
    const nothingLeft = async () => {
      assert.deepEqual(await jobDirsBelow(h.workRoot), [], "no job dir left below the work root");
      const procs = await processesUnder(h.workRoot, (argv) => !argv.includes("runner-host"));
      assert.deepEqual(procs.map((p) => p.argv.join(" ")), [], "no runner or job process left");
    };

    before(async () => {
      h = await startHarness({ leaseTtlMs: 3_000 });
      await chmod(h.dir, 0o711);
      provider = make(h.workRoot, randomInt(30_000, 50_000));
      provider.onExit((e) => exits.push(e));
      const init = await provider.init();
      assert.deepEqual(init.adopted, [], "a fresh work root has no runner to adopt");
    });
    after(async () => {
      for (const r of provider.list()) await provider.terminate(r.id);
      await provider.reapFreeSlots?.();
      await provider.close();
      await h.cleanup();
    });

    void it("launch: starting → idle (registered) → busy (one job) → exits 0; its job succeeded", async () => {
      const id = await launch();
      await until("idle", () => stateOf(id) === "idle");
      const jobId = await h.submit({ name: "one", steps: [{ name: "s", run: "echo one" }] });
      const exit = await until("exit", () => exitOf(id));
      assert.equal(exit.code, 0, exit.logTail);
      assert.equal(exit.requested, false);
      assert.equal(exit.runner.everBusy, true, "the exit says it ran a job");
      const states = seen.get(id) ?? [];
      assert.ok(states.includes("idle"), `listed idle once registered: ${states.join(" → ")}`);
      // Never busy before its job: a job as short as this one may end between two looks, so its busy may go unseen.
      const busy = states.indexOf("busy");
      assert.ok(busy === -1 || busy > states.indexOf("idle"), `busy only after idle: ${states.join(" → ")}`);
      const job = await h.waitJob(jobId);
      assert.equal(job.state, "succeeded", JSON.stringify(job.failure));
      assert.equal(job.attempts.length, 1);
      assert.equal(stateOf(id), undefined, "an exited runner is no longer listed");
      await nothingLeft();
    });

    void it("drain of an idle runner: it exits, requested, never busy; nothing left", async () => {
      const id = await launch();
      await until("idle", () => stateOf(id) === "idle");
      await provider.drain(id);
      assert.equal(stateOf(id), "draining", "listed draining at once");
      const exit = await until("exit", () => exitOf(id));
      assert.equal(exit.requested, true);
      assert.equal(exit.runner.everBusy, false);
      await nothingLeft();
    });

    void it("drain of a runner that holds a job (its lease came back as the drain was sent): the job runs to its end", async () => {
      const jobId = await h.submit({ name: "drained-busy", steps: [{ name: "s", run: "sleep 0.5; echo done" }] });
      const id = await launch();
      await until("busy", () => stateOf(id) === "busy");
      await provider.drain(id);
      const exit = await until("exit", () => exitOf(id));
      assert.equal(exit.code, 0, exit.logTail);
      assert.equal(exit.runner.everBusy, true);
      const job = await h.waitJob(jobId);
      assert.equal(job.state, "succeeded", JSON.stringify(job.failure));
      assert.deepEqual(job.attempts.map((a) => a.state), ["succeeded"], "the drain did not stop the job");
      await nothingLeft();
    });

    void it("terminate of a busy runner: it exits, requested; its step is killed; its slot is reaped", async () => {
      const marker = `${randomInt(100, 999)}.${randomInt(1000, 9999)}`;
      const jobId = await h.submit({ name: "long", steps: [{ name: "wait", run: `sleep ${marker}` }] });
      const id = await launch();
      await until("busy", () => stateOf(id) === "busy");
      await h.waitFor("the step", async () => (await findProcessesByArg(marker)).length > 0);
      await provider.terminate(id);
      const exit = await until("exit", () => exitOf(id));
      assert.equal(exit.requested, true);
      assert.equal(exit.runner.everBusy, true);
      assert.deepEqual(await findProcessesByArg(marker), [], "the job's step is gone");
      const job = await h.job(jobId);
      assert.ok(job.attempts[0]?.state !== "succeeded", "the terminated attempt did not succeed");
      await nothingLeft();
    });
  });
}
