/**
 * Crashes: the controller killed with SIGKILL mid-run (its runners go on; a new controller adopts
 * the live ones and reaps what dead ones left), and a runner killed with SIGKILL mid-job (the
 * server retries the job on a fresh runner; nothing of the dead one is left). Real server, real
 * `deltaci controller` and `deltaci runner` processes.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { open, readdir, readFile, readlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pino } from "pino";
import { selfCommand } from "../src/config/paths.ts";
import { controllerOptionsFromFlags, startLocalController } from "../src/cli/commands/controller.ts";
import { isSameProcess, readProcStat } from "../src/controller/proc.ts";
import { alive, startHarness, type Harness } from "./controller-harness.ts";

const gated = (gate: string) => [{ name: "wait", run: `while [ ! -e ${gate} ]; do sleep 0.02; done; echo done` }];

/** Processes whose working directory is under `dir` (a step's processes sit in the slot's work dir), as pid + start time. */
async function processesIn(dir: string): Promise<Array<{ pid: number; startTime: string }>> {
  const out: Array<{ pid: number; startTime: string }> = [];
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const cwd = await readlink(`/proc/${name}/cwd`).catch(() => "");
    const st = await readProcStat(Number(name));
    if (st && (cwd === dir || cwd.startsWith(`${dir}/`))) out.push({ pid: Number(name), startTime: st.startTime });
  }
  return out;
}

/** Still running: same pid and start time (a reused pid is another process). */
const survives = (p: { pid: number; startTime: string }) => isSameProcess(p.pid, p.startTime);

async function runnerPids(workRoot: string): Promise<Array<{ slot: string; pid: number }>> {
  const out = [];
  for (const slot of await readdir(join(workRoot, "controller")).catch(() => [] as string[])) {
    const st = await readFile(join(workRoot, "controller", slot, "state.json"), "utf8").then((t) => JSON.parse(t) as { pid: number }, () => null);
    if (st) out.push({ slot, pid: st.pid });
  }
  return out;
}

function flags(h: Harness, extra: Partial<Record<string, unknown>> = {}) {
  return {
    maxRunners: "2", minIdle: "0", pool: [] as string[], isolation: "process", workRoot: h.workRoot, runnerIdleTimeout: "2m", idleGrace: "500ms", runnerMode: "process", ...extra,
  };
}

void test("SIGKILL of the controller mid-run: jobs finish; a new controller adopts live runners and reaps dead ones", async (t) => {
  const h = await startHarness({ leaseTtlMs: 3000 });
  t.after(() => h.cleanup());
  const gate = join(h.dir, "gate");
  const self = selfCommand();
  const log = await open(join(h.dir, "controller-1.log"), "w");
  const first = spawn(self.command, [...self.args, "controller", "--server", h.server.url, "--controller-token-file", h.tokenFile, "--work-root", h.workRoot, "--isolation", "process", "--max-runners", "2", "--runner-mode", "process"], { stdio: ["ignore", log.fd, log.fd] });
  await log.close();
  t.after(() => void (first.exitCode === null && first.kill("SIGKILL")));

  const a = await h.submit({ name: "a", steps: gated(gate) });
  const b = await h.submit({ name: "b", steps: gated(gate) });
  await h.waitJob(a, (j) => j.state === "running");
  await h.waitJob(b, (j) => j.state === "running");
  const runners = await runnerPids(h.workRoot);
  assert.equal(runners.length, 2);

  first.kill("SIGKILL");
  await new Promise((r) => first.once("exit", r));
  for (const r of runners) assert.ok(await alive(r.pid), "runners outlive their controller");

  // while no controller watches, one runner dies: its step's processes are left in its slot
  const [victim, survivor] = runners as [{ slot: string; pid: number }, { slot: string; pid: number }];
  process.kill(victim.pid, "SIGKILL");
  await h.waitFor("the victim gone", async () => !(await alive(victim.pid)));
  const victimWork = join(h.workRoot, victim.slot);
  const strays = await processesIn(victimWork);
  assert.ok(strays.length > 0, "precondition: the dead runner left its step running");

  const ctl = await startLocalController(controllerOptionsFromFlags(flags(h), { serverUrl: h.server.url, controllerToken: h.server.controllerToken }), pino({ level: "silent" }));
  t.after(() => ctl.stop({ runners: "terminate" }));
  assert.equal((await ctl.metrics.adopted.get()).values[0]?.value, 1);
  assert.deepEqual(ctl.provider.list().map((r) => Number(r.handle)), [survivor.pid]);
  const reaped = (await ctl.metrics.reaped.get()).values;
  assert.ok((reaped.find((v) => v.labels.kind === "process")?.value ?? 0) >= 1, `reaped: ${JSON.stringify(reaped)}`);
  // the reap signals them; each is gone once the kernel has delivered it (under load, a moment after init)
  await h.waitFor("the dead runner's stray step processes killed", async () => {
    for (const p of strays) if (await survives(p)) return false;
    return true;
  });

  // the server retries the dead runner's job on a fresh runner; the adopted runner finishes its own
  await writeFile(gate, "");
  const [ja, jb] = [await h.waitJob(a), await h.waitJob(b)];
  assert.equal(ja.state, "succeeded");
  assert.equal(jb.state, "succeeded");
  const attempts = [ja, jb].map((j) => j.attempts.length).sort();
  assert.deepEqual(attempts, [1, 2], "the killed runner's job ran twice, the adopted one's once");
  await ctl.stop({ runners: "drain" });
  assert.deepEqual(await processesIn(h.workRoot), [], "nothing left running in any slot");
  assert.deepEqual(await runnerPids(h.workRoot), []);
});

void test("SIGKILL of a runner mid-job: the server retries on a fresh runner and nothing of the dead one is left", async (t) => {
  const h = await startHarness({ leaseTtlMs: 3000 });
  t.after(() => h.cleanup());
  const ctl = await startLocalController(controllerOptionsFromFlags(flags(h), { serverUrl: h.server.url, controllerToken: h.server.controllerToken }), pino({ level: "silent" }));
  t.after(() => ctl.stop({ runners: "terminate" }));
  const gate = join(h.dir, "gate");
  const id = await h.submit({ name: "victim", steps: gated(gate) });
  await h.waitJob(id, (j) => j.state === "running");
  // the runner whose slot holds the step (`running` may be reported just before the step's process exists)
  type Victim = { handle: string; slotWork: string; strays: Array<{ pid: number; startTime: string }> };
  const found: Victim[] = [];
  await h.waitFor("the step's processes in a runner's slot", async () => {
    for (const r of ctl.provider.list()) {
      const slotWork = join(h.workRoot, `slot-${r.id.split("-")[1]}`);
      const strays = await processesIn(slotWork);
      if (strays.length > 0) found.push({ handle: r.handle, slotWork, strays });
    }
    return found.length > 0;
  });
  const { handle, slotWork, strays } = found[0] as Victim;
  process.kill(Number(handle), "SIGKILL");

  await h.waitFor("the dead runner's slot reaped", async () => ((await ctl.metrics.reaped.get()).values.find((v) => v.labels.kind === "process")?.value ?? 0) >= 1);
  // the reap signals them; each is gone once the kernel has delivered it
  await h.waitFor("the dead runner's step processes killed", async () => {
    for (const p of strays) if (await survives(p)) return false;
    return true;
  });
  const exits = (await ctl.metrics.exits.get()).values;
  assert.equal(exits.find((v) => v.labels.outcome === "failed")?.value, 1, `exits: ${JSON.stringify(exits)}`);
  await h.waitJob(id, (j) => j.attempts.length === 2 && j.state === "running");
  await writeFile(gate, "");
  const job = await h.waitJob(id);
  assert.equal(job.state, "succeeded");
  assert.equal(job.attempts[0]?.state, "lost");
  await h.waitFor("no runner left", () => ctl.provider.list().length === 0);
  assert.deepEqual(await processesIn(h.workRoot), []);
  assert.deepEqual(await readdir(slotWork).catch(() => []), []);
});
