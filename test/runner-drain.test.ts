/**
 * A drain (a supervisor ends a runner it saw idle) against the real server on loopback, the
 * runner in process, the process sandbox. The supervisor's view lags: it may drain a runner whose
 * lease is already on its way back. A drain ends a runner that holds no job; a job it already
 * leased runs to its end and is reported, never stopped as runner_error. The stop (SIGTERM)
 * still stops a running job.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { systemClock } from "../src/base/clock.ts";
import type { RunnerProtocol } from "../src/runner/ports.ts";
import type { SandboxFactory } from "../src/sandbox/types.ts";
import { ProcessSandboxFactory } from "../src/sandbox/process/process-sandbox.ts";
import { slotInfo } from "../src/sandbox/slots.ts";
import { jobSpec, memoryLogger, runInProcess, startHarness, type Harness } from "./support/runner-harness.ts";

const factory = new ProcessSandboxFactory({ clock: systemClock, logger: { info: () => {}, warn: () => {} } });

/**
 * The client, with `onLease` called once the server answered a lease and 50 ms before the runner
 * gets it: the drain meets a lease on its way (the runner's superseding poll runs meanwhile).
 */
function afterLease(client: RunnerProtocol, onLease: () => void): RunnerProtocol {
  return { ...delegate(client), lease: async (...a) => {
    const lease = await client.lease(...a);
    if (lease !== null) {
      onLease();
      await new Promise((r) => setTimeout(r, 50));
    }
    return lease;
  } };
}

/** The client, with `onPoll` called as the runner sends its first lease poll (it waits for a job from then on). */
function onLeasePoll(client: RunnerProtocol, onPoll: () => void): RunnerProtocol {
  return { ...delegate(client), lease: (...a) => {
    onPoll();
    return client.lease(...a);
  } };
}

function delegate(client: RunnerProtocol): RunnerProtocol {
  return {
    register: (...a) => client.register(...a),
    lease: (...a) => client.lease(...a),
    heartbeat: (...a) => client.heartbeat(...a),
    putLog: (...a) => client.putLog(...a),
    createArtifact: (...a) => client.createArtifact(...a),
    uploadArtifact: (...a) => client.uploadArtifact(...a),
    downloadSource: (...a) => client.downloadSource(...a),
    complete: (...a) => client.complete(...a),
    cancelAck: (...a) => client.cancelAck(...a),
    destroy: () => client.destroy(),
  };
}

void describe("runner drain", () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ leaseTtlMs: 6000, heartbeatIntervalMs: 1000 });
  });
  after(async () => {
    await h?.close();
  });

  void it("a drain that meets a lease already answered: the job runs to its end and is reported", async () => {
    const jobId = await h.api.submit(jobSpec({ steps: [{ name: "s", run: "sleep 0.3; echo done" }] }));
    const drain = new AbortController();
    const logger = memoryLogger();
    const exit = await runInProcess(h, factory, { drain: drain.signal, logger, wrapClient: (c) => afterLease(c, () => drain.abort(new Error("drained"))) });
    assert.ok(drain.signal.aborted, "the drain was sent");
    assert.equal(exit.code, 0, logger.lines.join("\n"));
    assert.equal(exit.reason, "reported");
    assert.equal(exit.jobId, jobId);
    const job = await h.api.waitDone(jobId, 30_000);
    assert.equal(job.state, "succeeded", JSON.stringify(job.failure));
    assert.deepEqual(job.attempts.map((a) => a.state), ["succeeded"]);
  });

  void it("a drain while the runner waits for a job: its long poll is superseded and it ends having leased nothing", { timeout: 60_000 }, async () => {
    const drain = new AbortController();
    const slot = { ...slotInfo(39, join(h.root, "slots")), workDir: join(h.root, "slots", "slot-39", "work") };
    mkdirSync(join(h.root, "slots", "slot-39"), { recursive: true, mode: 0o711 });
    let polling = () => {};
    const inLongPoll = new Promise<void>((r) => (polling = r));
    // A set-up as slow as a loaded host's (its reap, its toolchain probe): the runner is waited for, not given a fixed time.
    const slowSetUp: SandboxFactory = {
      isolation: factory.isolation, create: (spec) => factory.create(spec),
      reapSlot: async (s) => {
        await new Promise((r) => setTimeout(r, 600));
        return factory.reapSlot(s);
      },
      isSlotClean: (s) => factory.isSlotClean(s), settle: () => factory.settle(), prewarm: () => factory.prewarm(), close: () => factory.close(),
    };
    const running = runInProcess(h, slowSetUp, {
      slot, drain: drain.signal, leaseWaitMs: 30_000, idleTimeoutMs: 60_000,
      wrapClient: (c) => onLeasePoll(c, () => polling()),
    });
    await inLongPoll;
    // made while it registers (never waited for by the lease), so that a job's lease-to-step path creates no file (docs/runner.md)
    const spool = join(slot.workDir, "runner", "log.spool");
    while (!existsSync(spool)) await new Promise((r) => setTimeout(r, 5));
    drain.abort(new Error("drained"));
    const exit = await running;
    assert.equal(exit.code, 0);
    assert.equal(exit.reason, "stopped");
    assert.equal(exit.jobId, null);
    assert.equal(existsSync(join(slot.workDir, "runner")), false, "a runner that ends without a job removes the job dir it made");
    // The job submitted after the drain is not held by the drained runner: the next runner takes it.
    const jobId = await h.api.submit(jobSpec({ steps: [{ name: "s", run: "echo next" }] }));
    const next = await runInProcess(h, factory);
    assert.equal(next.jobId, jobId);
    assert.equal((await h.api.waitDone(jobId, 30_000)).state, "succeeded");
  });

  void it("a stop (SIGTERM) still stops a running job, reported as runner_error", async () => {
    const jobId = await h.api.submit(jobSpec({ steps: [{ name: "s", run: "sleep 30" }] }));
    const stop = new AbortController();
    const running = runInProcess(h, factory, { signal: stop.signal, timings: { flushIntervalMs: 50, flushBytes: 256 * 1024, chunkBytes: 1024 * 1024, cancelGraceMs: 500, tailUploadMs: 5_000, disposeMs: 60_000 } });
    await h.api.waitFor(jobId, (j) => j.state === "running", "running");
    stop.abort(new Error("SIGTERM"));
    const exit = await running;
    assert.equal(exit.reason, "reported");
    const job = await h.api.waitFor(jobId, (j) => j.attempts[0]?.state !== "running", "the attempt ended");
    assert.equal(job.attempts[0]?.reason, "runner_error", JSON.stringify(job.attempts[0]));
  });
});
