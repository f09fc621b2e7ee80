/**
 * The local provider with real processes: slots, state probing, adoption by a new provider
 * (pid + start time), reaping of dead runners' slots, drain and terminate. The "runner" here is
 * a small node script that behaves like one at the process level (takes its token file, then
 * idles, or runs a child process as a job would); the real runner is exercised in test/.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile, mkdir, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { systemClock } from "../base/clock.ts";
import { LocalProvider, workDirReaper } from "./local-provider.ts";
import type { RunnerExit, SlotReaper } from "./provider.ts";
import type { Pool } from "./types.ts";

const FAKE_RUNNER = `
const fs = require("fs");
const a = process.argv;
const tokenFile = a[a.indexOf("--registration-token-file") + 1];
const work = a[a.indexOf("--work-dir") + 1];
const token = fs.readFileSync(tokenFile, "utf8"); fs.rmSync(tokenFile);
console.log("registered with", token.length, "bytes");
process.on("SIGTERM", () => {
  if (a.includes("--term-marker")) fs.writeFileSync(a[a.indexOf("--term-marker") + 1], "stopped by SIGTERM");
  process.exit(0);
});
// a drain (a runner of a version before the drain signal has no handler: SIGUSR2 kills it)
if (!a.includes("--no-drain-handler")) process.on("SIGUSR2", () => process.exit(0));
const events = a[a.indexOf("--events-file") + 1];
const event = (e) => fs.appendFileSync(events, JSON.stringify({ runnerId: "r1", ...e }) + "\\n");
event({ type: "registered" });
// a lease is told through the events file; the same words in the log must not count
if (a.includes("--log-leased")) setTimeout(() => console.log(JSON.stringify({ level: 30, msg: "leased", type: "leased", jobId: "j1" })), 50);
if (a.includes("--event-leased")) setTimeout(() => event({ type: "leased", jobId: "j1", attempt: 1 }), 50);
// a child of its own that is no job (an oci runner's prewarmed sandbox)
if (a.includes("--own-child")) require("child_process").spawn("sleep", ["300"], { stdio: "ignore" });
if (a.includes("--busy")) {
  fs.mkdirSync(work + "/job1", { recursive: true }); fs.writeFileSync(work + "/job1/leftover", "x");
  require("child_process").spawn("sleep", ["300"], { stdio: "ignore", cwd: work + "/job1", detached: true });
  // told only once the job's process runs: a test that kills this runner on "busy" then finds it orphaned
  event({ type: "leased", jobId: "j1", attempt: 1 });
}
setInterval(() => {}, 1000);
`;
const pool: Pool = { name: "p", os: "linux", arch: "x64", labels: ["a"], resources: { cpus: 1, memoryMiB: 1, diskMiB: 1 }, max: 4, minIdle: 0, isolation: "process" };

async function setup(t: { after(fn: () => unknown): void }) {
  const root = await mkdtemp(join(tmpdir(), "dci-lp-"));
  const pids = new Set<number>();
  const providers: LocalProvider[] = [];
  t.after(async () => {
    // Closed first: a provider still open reaps its killed runners' slots, which remakes their dirs after the rm.
    for (const p of providers) await p.close();
    for (const pid of pids) {
      try {
        process.kill(-pid, "SIGKILL");
      } catch {}
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    }
    await rm(root, { recursive: true, force: true });
  });
  const reaped: string[][] = [];
  const reaper: SlotReaper = { reap: async (slot) => { const r = await workDirReaper.reap(slot); reaped.push(r); return r; } };
  const make = (busy = false, extra: string[] = []) => {
    const p = new LocalProvider({
      workRoot: root, command: { command: process.execPath, args: ["-e", FAKE_RUNNER, "--"] }, runnerIdleTimeoutMs: 60_000,
      drainTimeoutMs: 5_000, reaper, clock: systemClock, runnerArgs: [...(busy ? ["--busy"] : []), ...extra],
    });
    providers.push(p);
    const exits: RunnerExit[] = [];
    p.onExit((e) => exits.push(e));
    return { p, exits };
  };
  const until = async (what: string, cond: () => Promise<boolean> | boolean) => {
    const deadline = Date.now() + 30_000;
    while (!(await cond())) {
      if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { root, pids, make, until, reaped };
}

void test("launch: own slot, token file taken by the runner, starting → idle, drain ends it cleanly", async (t) => {
  const { root, pids, make, until } = await setup(t);
  const { p, exits } = make();
  await p.init();
  const a = await p.launch({ pool, registrationToken: "dci_reg_x", serverUrl: "http://127.0.0.1:1" });
  const b = await p.launch({ pool, registrationToken: "dci_reg_y", serverUrl: "http://127.0.0.1:1" });
  pids.add(Number(a.handle)).add(Number(b.handle));
  assert.notEqual(a.id, b.id);
  assert.deepEqual((await readdir(join(root, "controller"))).sort(), ["slot-0", "slot-1"]);
  const state = JSON.parse(await readFile(join(root, "controller", "slot-0", "state.json"), "utf8"));
  assert.equal(state.pid, Number(a.handle));
  assert.match(state.startTime, /^\d+$/);
  await until("both idle", async () => (await p.refresh(), p.list().every((r) => r.state === "idle")));
  await until("the runner's output in its log", async () => /registered with 9 bytes/.test(await readFile(join(root, "controller", "slot-0", "runner.log"), "utf8")));
  const args = (await readFile(`/proc/${a.handle}/cmdline`, "utf8")).split("\0");
  for (const flag of ["--server", "--registration-token-file", "--work-dir", "--slot", "--isolation", "--labels", "--idle-timeout"]) assert.ok(args.includes(flag), flag);
  await p.drain(a.id);
  await until("a exits", () => exits.length === 1);
  assert.equal(exits[0]?.code, 0);
  assert.equal(exits[0]?.requested, true);
  assert.deepEqual(p.list().map((r) => r.id), [b.id]);
  // slot 0 is free again and reused
  const c = await p.launch({ pool, registrationToken: "dci_reg_z", serverUrl: "http://127.0.0.1:1" });
  pids.add(Number(c.handle));
  assert.match(c.id, /^p-0-/);
  await p.terminate(b.id);
  await p.terminate(c.id);
  await until("all exit", () => exits.length === 3);
  assert.equal(p.list().length, 0);
});

void test("a new provider adopts live runners (busy stays busy) and reaps the slots of dead ones", async (t) => {
  const { root, pids, make, until, reaped } = await setup(t);
  const first = make(true).p;
  await first.init();
  const live = await first.launch({ pool, registrationToken: "t1", serverUrl: "http://127.0.0.1:1" });
  const doomed = await first.launch({ pool, registrationToken: "t2", serverUrl: "http://127.0.0.1:1" });
  pids.add(Number(live.handle)).add(Number(doomed.handle));
  await until("both busy", async () => (await first.refresh(), first.list().every((r) => r.state === "busy")));
  await first.close(); // the controller "dies": nothing is stopped

  // one runner dies while no controller watches (SIGKILL: its job's process and files are left)
  process.kill(Number(doomed.handle), "SIGKILL");
  await until("doomed gone", async () => !(await readFile(`/proc/${doomed.handle}/stat`, "utf8").then((s) => !/\) [ZX] /.test(s), () => false)));
  // a stale state file whose pid now belongs to someone else (pid reuse): must not be adopted
  await mkdir(join(root, "controller", "slot-7"), { recursive: true });
  await writeFile(join(root, "controller", "slot-7", "state.json"), JSON.stringify({ version: 1, id: "p-7-x", pool: "p", pid: process.pid, startTime: "1", launchedAtMs: 0, tokenFile: join(root, "controller", "slot-7", "registration-token") }));

  const { p: second, exits } = make();
  const init = await second.init();
  assert.deepEqual(init.adopted.map((r) => r.id), [live.id]);
  assert.equal(init.adopted[0]?.state, "busy");
  assert.ok(init.reaped.some((r) => r.startsWith("process ")), `the orphaned job process was killed: ${init.reaped.join(", ")}`);
  assert.ok(init.reaped.some((r) => r.includes("job1")), "the dead runner's work dir was reaped");
  assert.deepEqual((await readdir(join(root, "slot-1"))), []);
  await assert.rejects(readFile(join(root, "controller", "slot-7", "state.json")));
  assert.deepEqual(second.list().map((r) => [r.id, r.adopted]), [[live.id, true]]);

  // the adopted runner ends: the new provider notices without being its parent, and reaps
  process.kill(Number(live.handle), "SIGKILL");
  await until("adopted exit seen", async () => (await second.refresh(), exits.length === 1));
  assert.equal(exits[0]?.runner.id, live.id);
  assert.equal(exits[0]?.code, null);
  assert.ok(exits[0]?.reaped.some((r) => r.startsWith("process ")));
  assert.ok(reaped.length >= 2);
  assert.equal(second.list().length, 0);
});

void test("an adopted runner without a drain handler (an older version) is drained by its stop signal, not killed by SIGUSR2", async (t) => {
  const { root, pids, make, until } = await setup(t);
  const marker = join(root, "term-marker");
  const first = make(false, ["--no-drain-handler", "--term-marker", marker]).p;
  await first.init();
  const old = await first.launch({ pool, registrationToken: "t1", serverUrl: "http://127.0.0.1:1" });
  pids.add(Number(old.handle));
  await until("idle", async () => (await first.refresh(), first.list()[0]?.state === "idle"));
  await first.close();

  const { p: second, exits } = make();
  assert.deepEqual((await second.init()).adopted.map((r) => r.id), [old.id]);
  await second.drain(old.id);
  await until("drained runner exited", async () => (await second.refresh(), exits.length === 1));
  assert.equal(await readFile(marker, "utf8"), "stopped by SIGTERM", "it exited through its SIGTERM handler");
});

void test("a runner whose events file tells its lease is busy even before its job's first process; log text and its own children never count", async (t) => {
  const { pids, make, until } = await setup(t);
  const { p } = make(false, ["--log-leased", "--own-child"]);
  await p.init();
  const quiet = await p.launch({ pool, registrationToken: "t", serverUrl: "http://127.0.0.1:1" });
  pids.add(Number(quiet.handle));
  await until("idle", async () => (await p.refresh(), p.list()[0]?.state === "idle"));
  await new Promise((r) => setTimeout(r, 300));
  await p.refresh();
  assert.equal(p.list()[0]?.state, "idle", "a lease line in the log is not an event, nor a child process a job");
  await p.terminate(quiet.id);
  await until("gone", () => p.list().length === 0);
  const { p: p2 } = make(false, ["--event-leased"]);
  await p2.init();
  const r = await p2.launch({ pool, registrationToken: "t", serverUrl: "http://127.0.0.1:1" });
  pids.add(Number(r.handle));
  await until("busy", async () => (await p2.refresh(), p2.list()[0]?.state === "busy"));
  assert.equal(p2.list()[0]?.everBusy, true);
  await p2.terminate(r.id);
  await until("gone", () => p2.list().length === 0);
});

void test("a runner that dies right after its spawn is seen exiting: it never holds its slot as a starting runner", async (t) => {
  const { root, until } = await setup(t);
  const p = new LocalProvider({
    workRoot: root, command: { command: "/bin/sh", args: ["-c", "exit 3", "sh"] }, runnerIdleTimeoutMs: 60_000, drainTimeoutMs: 5_000,
    reaper: workDirReaper, clock: systemClock,
  });
  const exits: RunnerExit[] = [];
  p.onExit((e) => exits.push(e));
  await p.init();
  const n = 20;
  for (let i = 0; i < n; i++) await p.launch({ pool, registrationToken: `t${i}`, serverUrl: "http://127.0.0.1:1" });
  await until("every exit seen", () => exits.length === n);
  assert.ok(exits.every((e) => e.code === 3));
  assert.deepEqual(p.list(), []);
});

void test("a slot takes its next runner only after the previous one's exit was fully processed (its state and token files are not the next one's)", async (t) => {
  const { root, pids, until } = await setup(t);
  const relaunched: Array<Promise<{ id: string; handle: string }>> = [];
  let p: LocalProvider | null = null;
  let reaps = 0;
  // the reaper of the dying runner's slot starts the next runner as soon as reaping is done
  const reaper: SlotReaper = {
    reap: async (slot) => {
      const r = await workDirReaper.reap(slot);
      // once only: the next runner's own exit (killed by the clean-up) must not launch a third one, which would outlive the test
      if (reaps++ === 0) setImmediate(() => relaunched.push((p as LocalProvider).launch({ pool, registrationToken: "next", serverUrl: "http://127.0.0.1:1" })));
      return r;
    },
  };
  p = new LocalProvider({ workRoot: root, command: { command: process.execPath, args: ["-e", FAKE_RUNNER, "--"] }, runnerIdleTimeoutMs: 60_000, drainTimeoutMs: 5_000, reaper, clock: systemClock });
  const exits: RunnerExit[] = [];
  p.onExit((e) => exits.push(e));
  await p.init();
  const first = await p.launch({ pool, registrationToken: "first", serverUrl: "http://127.0.0.1:1" });
  pids.add(Number(first.handle));
  await until("first registered", async () => (await p.refresh(), p.list()[0]?.state === "idle"));
  process.kill(Number(first.handle), "SIGKILL");
  await until("first exit processed and the next launched", () => exits.length === 1 && relaunched.length === 1);
  const next = await (relaunched[0] as Promise<{ id: string; handle: string }>);
  pids.add(Number(next.handle));
  assert.notEqual(next.id.split("-")[1], first.id.split("-")[1], "not launched into the slot still being cleaned");
  const slotDir = join(root, "controller", `slot-${next.id.split("-")[1]}`);
  assert.equal(JSON.parse(await readFile(join(slotDir, "state.json"), "utf8")).id, next.id, "the next runner's state file is intact");
  await until("the next runner took its token", async () => (await p.refresh(), p.list().find((r) => r.id === next.id)?.state === "idle"));
});
