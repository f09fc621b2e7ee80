/**
 * Cancel and crash: a graceful cancel of a step that ignores SIGTERM (grace, then SIGKILL;
 * `always` artifacts and the log tail still uploaded; cancel-ack), a hard cancel, and a runner
 * process killed with SIGKILL mid-job (the job is retried on another runner and succeeds).
 * Process backend: the step's pid is visible to the test, which checks it is gone.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { systemClock } from "../src/base/clock.ts";
import { ProcessSandboxFactory } from "../src/sandbox/process/process-sandbox.ts";
import type { SandboxFactory } from "../src/sandbox/types.ts";
import { jobSpec, memoryLogger, runInProcess, startHarness, type Harness } from "./support/runner-harness.ts";

const factory = new ProcessSandboxFactory({ clock: systemClock, logger: { info: () => {}, warn: () => {} } });
const stubborn = "trap '' TERM; echo \"pid=$$\"; mkdir -p reports; echo partial > reports/partial.txt; while true; do sleep 0.1; done";

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function stepPid(log: string): number {
  const m = /pid=(\d+)/.exec(log);
  assert.ok(m, `step printed its pid: ${log}`);
  return Number(m[1]);
}

void describe("runner cancel and crash", () => {
  let h: Harness;
  const children: ChildProcess[] = [];
  const orphans: number[] = [];

  before(async () => {
    h = await startHarness({ leaseTtlMs: 4000, heartbeatIntervalMs: 1000 });
  });
  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    for (const pgid of orphans) try {
      process.kill(-pgid, "SIGKILL");
    } catch {}
    await h?.close();
  });

  for (const mode of ["graceful", "hard"] as const) {
    void it(`a ${mode} cancel stops a step that ignores SIGTERM and is acknowledged`, async () => {
      const jobId = await h.api.submit(jobSpec({
        steps: [{ name: "stubborn", run: stubborn }, { name: "after", run: "echo never" }],
        artifacts: [{ name: "partial.txt", paths: ["reports/partial.txt"], when: "always" }],
      }));
      const logger = memoryLogger();
      const running = runInProcess(h, factory, { logger, timings: { flushIntervalMs: 50, flushBytes: 256 * 1024, chunkBytes: 1 << 20, cancelGraceMs: 1500, tailUploadMs: 5000, disposeMs: 30_000 } });
      await h.api.waitFor(jobId, (j) => j.log.bytes > 0 && j.state === "running", "running with output");
      let log = "";
      while (!/pid=\d+/.test(log)) log = (await h.api.log(jobId)).toString();
      const pid = stepPid(log);
      orphans.push(pid);
      await h.api.cancel(jobId, mode);
      const exit = await running;
      assert.equal(exit.code, 0, logger.lines.join("\n"));
      assert.equal(exit.reason, "reported");
      const job = await h.api.waitDone(jobId, 30_000);
      assert.equal(job.state, "canceled");
      assert.equal(alive(pid), false, "the step's process is gone");
      const text = (await h.api.log(jobId)).toString();
      assert.match(text, new RegExp(`cancel requested \\(${mode}\\)`));
      assert.match(text, /step-skipped \{"index":1/);
      assert.ok(!text.includes("never"));
      assert.deepEqual(job.artifacts.map((a) => a.name), mode === "graceful" ? ["partial.txt"] : []);
    });
  }

  void it("a cancel during a long preparation reaches the runner: its heartbeat starts before any step, and the preparation is stopped", { timeout: 60_000 }, async () => {
    const jobId = await h.api.submit(jobSpec({ steps: [{ name: "s", run: "echo never" }] }));
    let creating = () => {};
    const inCreate = new Promise<void>((r) => (creating = r));
    // A sandbox build that lasts until the preparation is stopped: no step ever starts the heartbeat.
    const slow: SandboxFactory = {
      isolation: factory.isolation,
      create: (_spec, signal) => {
        creating();
        return new Promise((_resolve, reject) => signal?.addEventListener("abort", () => reject(new Error("preparation stopped")), { once: true }));
      },
      reapSlot: (s) => factory.reapSlot(s), isSlotClean: (s) => factory.isSlotClean(s), settle: () => factory.settle(),
      prewarm: () => factory.prewarm(), close: async () => {},
    };
    const logger = memoryLogger();
    const running = runInProcess(h, slow, { logger });
    await inCreate;
    await h.api.cancel(jobId, "graceful");
    const exit = await running;
    assert.equal(exit.jobId, jobId, logger.lines.join("\n"));
    assert.equal(exit.reason, "reported");
    const job = await h.api.waitDone(jobId, 30_000);
    assert.equal(job.state, "canceled", JSON.stringify(job.attempts));
  });

  void it("a runner killed with SIGKILL mid-job: the job is retried on the next runner in the slot and succeeds", async () => {
    const jobId = await h.api.submit(jobSpec({
      steps: [{ name: "once", run: 'echo "attempt $DELTACI_ATTEMPT pid=$$"; if [ "$DELTACI_ATTEMPT" = 1 ]; then sleep 300; fi; echo finished' }],
    }));
    const slotDir = join(h.root, "cli-slot");
    mkdirSync(slotDir, { recursive: true, mode: 0o711 });
    const spawnRunner = async (name: string) => {
      const tokenFile = join(slotDir, `${name}.token`);
      writeFileSync(tokenFile, await h.api.registrationToken(), { mode: 0o600 });
      const child = spawn(process.execPath, [
        "bin/deltaci.js", "runner", "--server", h.server.url, "--registration-token-file", tokenFile, "--isolation", "process",
        "--work-dir", join(slotDir, "work"), "--slot", "7", "--idle-timeout", "60s", "--log-level", "info",
      ], { stdio: ["ignore", "ignore", "pipe"] });
      children.push(child);
      let stderr = "";
      child.stderr?.on("data", (c: Buffer) => (stderr += c.toString()));
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      return { child, tokenFile, exited, stderr: () => stderr };
    };
    const first = await spawnRunner("first");
    await h.api.waitFor(jobId, (j) => j.state === "running" && j.log.bytes > 0, "attempt 1 running");
    let log = "";
    while (!/pid=\d+/.test(log)) log = (await h.api.log(jobId)).toString();
    orphans.push(stepPid(log));
    assert.equal(existsSync(first.tokenFile), false, "the token file was deleted at start");
    first.child.kill("SIGKILL");
    await first.exited;
    // The process backend cannot kill what a dead runner left; the oci backend's reapSlot does.
    for (const pgid of orphans) try {
      process.kill(-pgid, "SIGKILL");
    } catch {}

    const second = await spawnRunner("second");
    const code = await second.exited;
    assert.equal(code, 0, second.stderr());
    const job = await h.api.waitDone(jobId, 30_000);
    assert.equal(job.state, "succeeded");
    assert.deepEqual(job.attempts.map((a) => a.state), ["lost", "succeeded"]);
    assert.match((await h.api.log(jobId)).toString(), /attempt 2 pid=\d+\nfinished/);
  });
});
