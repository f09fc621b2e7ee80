import { test } from "node:test";
import assert from "node:assert/strict";
import { timerClock } from "../base/clock.ts";
import type { HeartbeatRequest, HeartbeatResponse } from "../protocol/schemas.ts";
import { HeartbeatLoop } from "./heartbeat-loop.ts";

interface Call {
  body: HeartbeatRequest;
  /** Aborted before its answer: over HTTP, that costs the call's keep-alive connection. */
  cut: boolean;
  answer(cancel?: HeartbeatResponse["cancel"]): void;
}

/** A protocol client whose heartbeats stay held until the test answers them (as a server holds them). */
function heldClient() {
  const calls: Call[] = [];
  let onCall: (() => void) | null = null;
  return {
    calls,
    /** Resolves once `n` heartbeats were sent. */
    sent: (n: number) => new Promise<void>((resolve) => {
      const check = () => (calls.length >= n ? resolve() : (onCall = check));
      check();
    }),
    heartbeat: (_token: string, body: HeartbeatRequest, opts: { signal?: AbortSignal | undefined }) => new Promise<HeartbeatResponse>((resolve, reject) => {
      const signal = opts.signal ?? new AbortController().signal;
      let answered = false;
      const call: Call = {
        body, cut: false,
        answer: (cancel = "none") => {
          answered = true;
          resolve({ expiresAt: new Date().toISOString(), heartbeatIntervalMs: 10_000, cancel });
        },
      };
      signal.addEventListener("abort", () => {
        if (answered) return;
        call.cut = true;
        reject(signal.reason as Error);
      }, { once: true });
      calls.push(call);
      const f = onCall;
      onCall = null;
      f?.();
    }),
  };
}

function loop(client: ReturnType<typeof heldClient>, state: { v: HeartbeatRequest["state"] }, events: string[] = []) {
  return new HeartbeatLoop({
    client, leaseToken: "dci_lse_x", clock: timerClock(), logger: { info: () => {}, warn: () => {}, error: () => {} },
    ttlMs: 30_000, heartbeatIntervalMs: 10_000,
    status: () => ({ state: state.v, step: null, logBytes: 0 }),
    onCancel: (m) => events.push(`cancel ${m}`), onLeaseEnd: (w) => events.push(`lease ${w}`),
  });
}

void test("heartbeat: wake() sends the new status beside the held call and does not abort it", async () => {
  const client = heldClient();
  const state = { v: "preparing" as HeartbeatRequest["state"] };
  const hb = loop(client, state);
  hb.start();
  await client.sent(1);
  assert.equal(client.calls[0]?.body.state, "preparing");
  state.v = "running";
  hb.wake();
  await client.sent(2);
  assert.equal(client.calls[1]?.body.state, "running");
  assert.equal(client.calls[0]?.cut, false, "the held preparing call is let go, not aborted (its connection stays)");
  client.calls[0]?.answer();
  hb.release();
  client.calls[1]?.answer();
  await hb.stop();
  assert.equal(client.calls[0]?.cut, false);
  assert.equal(client.calls[1]?.cut, false, "answered before stop: not aborted");
  assert.equal(client.calls.length, 2, "no heartbeat after release");
});

void test("heartbeat: after release, the answer of the held call is ignored; stop() aborts calls still out", async () => {
  const client = heldClient();
  const events: string[] = [];
  const hb = loop(client, { v: "running" }, events);
  hb.start();
  await client.sent(1);
  hb.release();
  client.calls[0]?.answer("graceful");
  const preparing = heldClient();
  const other = loop(preparing, { v: "preparing" });
  other.start();
  await preparing.sent(1);
  await Promise.all([hb.stop(), other.stop()]);
  assert.deepEqual(events, [], "a cancel answered after the report raises nothing");
  assert.equal(client.calls.length, 1);
  assert.equal(preparing.calls[0]?.cut, true, "a call still held at stop() is aborted");
});

void test("heartbeat: a woken call that is still held at stop() is aborted then", async () => {
  const client = heldClient();
  const state = { v: "preparing" as HeartbeatRequest["state"] };
  const hb = loop(client, state);
  hb.start();
  await client.sent(1);
  state.v = "running";
  hb.wake();
  await client.sent(2);
  await hb.stop();
  assert.equal(client.calls[0]?.cut, true);
  assert.equal(client.calls[1]?.cut, true);
});
