/**
 * When the runner host reaps a slot between sessions: only when the sandbox factory no longer
 * vouches for it (`isSlotClean` false, e.g. after a failed teardown) or its last session ended
 * abnormally. A RunnerHost in this process (as `deltaci run` has it) with the process backend,
 * wrapped to count reaps and to withdraw its vouching on demand; the real server on loopback.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import { join } from "node:path";
import { pino } from "pino";
import { systemClock } from "../src/base/clock.ts";
import { DELTACI_VERSION } from "../src/config/defaults.ts";
import { defaultRunnerSettings } from "../src/config/runner-config.ts";
import { RunnerHost } from "../src/host/runner-host.ts";
import type { HostEvent } from "../src/protocol/host-protocol.ts";
import { ProcessSandboxFactory } from "../src/sandbox/process/process-sandbox.ts";
import { slotInfo } from "../src/sandbox/slots.ts";
import type { SlotInfo } from "../src/sandbox/types.ts";
import { startHarness } from "./controller-harness.ts";

class CountingFactory extends ProcessSandboxFactory {
  reaps = 0;
  vouch = true;
  override async reapSlot(slot: SlotInfo): Promise<string[]> {
    this.reaps++;
    return super.reapSlot(slot);
  }
  override isSlotClean(slot: SlotInfo): boolean {
    return this.vouch && super.isSlotClean(slot);
  }
}

void test("runner host: a slot is reaped between sessions only when the factory stops vouching for it", { timeout: 120_000 }, async (t) => {
  const h = await startHarness();
  t.after(() => h.cleanup());
  const logger = pino({ level: process.env.DCI_TEST_LOG ?? "silent" });
  const factory = new CountingFactory({ clock: systemClock, logger });
  const { serverUrl: _u, labels: _l, ...settings } = defaultRunnerSettings("http://unused", { labels: [], cacheDir: null, idleTimeoutMs: 60_000, prewarm: true });
  const host = new RunnerHost({
    slots: [slotInfo(randomInt(30_000, 50_000), join(h.dir, "slots"))], sandboxFactory: factory,
    settings: { ...settings, version: DELTACI_VERSION }, clock: systemClock, logger, maxSessions: 0, maxAgeMs: 0,
  });
  t.after(() => host.close());
  const exits: Array<Extract<HostEvent, { type: "session_exited" }>> = [];
  const waiting = new Map<string, () => void>();
  host.onEvent((e) => {
    if (e.type !== "session_exited") return;
    exits.push(e);
    waiting.get(e.id)?.();
  });
  await host.init();
  assert.equal(factory.reaps, 1, "the host reaps its slot once at start");
  const session = async (id: string) => {
    const jobId = await h.submit({ name: id, steps: [{ name: "s", run: "echo hi" }] });
    const [token] = (await h.api.call<{ tokens: string[] }>({ method: "POST", path: "/v1/controller/registrations", token: h.server.controllerToken, json: { count: 1, labels: [] } })).body.tokens;
    const ended = new Promise<void>((r) => waiting.set(id, r));
    host.launch({ id, registrationToken: token as string, serverUrl: h.server.url, labels: [] });
    await ended;
    assert.equal((await h.waitJob(jobId)).state, "succeeded");
    return exits.find((e) => e.id === id);
  };

  assert.equal((await session("a"))?.code, 0);
  assert.equal((await session("b"))?.code, 0);
  assert.equal(factory.reaps, 1, "a clean slot the factory vouches for goes to the next session unreaped");
  factory.vouch = false;
  assert.equal((await session("c"))?.code, 0);
  assert.equal(factory.reaps, 2, "a slot the factory no longer vouches for is reaped before the next session");
});
