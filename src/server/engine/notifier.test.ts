/** The notifier's armed wait: a wake between the read and the wait is kept (the log follow's race on PostgreSQL). */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Clock } from "../../base/clock.ts";
import { Notifier } from "./notifier.ts";

/** A clock whose sleeps end only when aborted: a wait returns only through a wake (or hangs, failing on the test's timeout). */
const wakeOnly: Clock = {
  now: () => 0,
  sleep: (_ms, signal) => new Promise<void>((resolve) => (signal?.aborted ? resolve() : signal?.addEventListener("abort", () => resolve(), { once: true }))),
};

void test("a key that fires after arm and before the wait makes the wait return at once", { timeout: 20_000 }, async () => {
  const n = new Notifier();
  const armed = n.arm(["log:j1", "shutdown"]);
  n.emit("log:j1"); // the commit lands while the follower's read is out
  assert.equal(await armed.wait(60_000, wakeOnly), true, "the wake was kept");
  armed.off();
  assert.equal(n.size, 0, "off() removes its listeners");
});

void test("an armed wait ends on a later fire of its keys, not on another key's", { timeout: 20_000 }, async () => {
  const n = new Notifier();
  const armed = n.arm(["log:j1"]);
  n.emit("log:j2");
  const waited = armed.wait(60_000, wakeOnly);
  let settled = false;
  void waited.then(() => (settled = true));
  await new Promise((r) => setImmediate(r));
  assert.equal(settled, false, "another key's wake does not end it");
  n.emit("log:j1");
  assert.equal(await waited, true);
  armed.off();
});

void test("a plain wait subscribes only when called: a fire before it is not seen", { timeout: 20_000 }, async () => {
  const n = new Notifier();
  n.emit("log:j1");
  const ac = new AbortController();
  const waited = n.wait(["log:j1"], 60_000, wakeOnly, ac.signal);
  ac.abort();
  assert.equal(await waited, false);
  assert.equal(n.size, 0);
});
