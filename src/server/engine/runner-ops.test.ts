/**
 * The heartbeat's cancel wait: a cancel that commits after the heartbeat read the job's cancel
 * mode, and before its wait began (its own commit still out), must end the wait at once.
 * A store stand-in lets the test put the cancel exactly there; the HTTP-level cancel tests
 * (test/server-state-machine.test.ts) cover the real stores.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Clock } from "../../base/clock.ts";
import type { EngineContext } from "./context.ts";
import { keys, Notifier } from "./notifier.ts";
import { heartbeat } from "./runner-ops.ts";
import type { AttemptRow, JobRow } from "./types.ts";

/** A clock whose sleeps end only when aborted: a wait returns only through a wake (or hangs, failing on the test's timeout). */
const wakeOnly: Clock = {
  now: () => 0,
  sleep: (_ms, signal) => new Promise<void>((resolve) => (signal?.aborted ? resolve() : signal?.addEventListener("abort", () => resolve(), { once: true }))),
};

function engineWithCancelAfterRead(): { ctx: EngineContext; events: Notifier } {
  const events = new Notifier();
  const job = { id: "job_1", attempt: 1, state: "running", cancelMode: "none" } as JobRow;
  const a = { jobId: "job_1", attempt: 1, state: "running", expiresAt: 60_000 } as AttemptRow;
  const tx = {
    getLeasedAttempt: async () => ({ a, job: { ...job } }),
    updateAttempt: async () => undefined,
  };
  const store = {
    write: async <T>(fn: (t: typeof tx) => Promise<T>): Promise<T> => {
      const out = await fn(tx);
      // A cancel commits here: after the heartbeat's read, before its own commit answers.
      job.cancelMode = "graceful";
      events.emit(keys.cancel(job.id, job.attempt));
      return out;
    },
    getJob: async () => ({ ...job }),
  };
  const ctx = {
    store, clock: wakeOnly, events, lifecycle: { stopping: false },
    opts: { leaseTtlMs: 30_000, heartbeatIntervalMs: 60_000 },
  } as unknown as EngineContext;
  return { ctx, events };
}

void test("a cancel committed between the heartbeat's read and its wait ends the wait at once", { timeout: 20_000 }, async () => {
  const { ctx, events } = engineWithCancelAfterRead();
  const res = await heartbeat(ctx, "lease-hash", { state: "running", step: 0, logBytes: 0, waitMs: 60_000 }, new AbortController().signal);
  assert.equal(res.cancel, "graceful");
  assert.equal(events.size, 0, "the heartbeat's wake-up listeners are removed");
});

void test("a heartbeat that fails its fence leaves no listener", async () => {
  const { ctx, events } = engineWithCancelAfterRead();
  const failing = { ...ctx, store: { write: async () => Promise.reject(new Error("fenced")) } } as unknown as EngineContext;
  await assert.rejects(heartbeat(failing, "lease-hash", { state: "running", step: 0, logBytes: 0, waitMs: 60_000 }, new AbortController().signal), /fenced/);
  assert.equal(events.size, 0);
});
