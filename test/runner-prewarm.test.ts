/**
 * A runner that prewarms (what `deltaci runner` does by default), against the real server and
 * real crun: a job of the remembered shape takes the sandbox built while its runner registered;
 * a job of another shape builds its own and becomes the remembered shape; an idle runner's warm
 * sandbox is disposed of when the factory's owner closes it. Nothing is left in the slot.
 */
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { systemClock } from "../src/base/clock.ts";
import { CrunSandboxFactory } from "../src/sandbox/oci/crun-sandbox-factory.ts";
import { rememberShape } from "../src/runner/warm-shape.ts";
import { slotInfo } from "../src/sandbox/slots.ts";
import type { SlotInfo } from "../src/sandbox/types.ts";
import { jobSpec, memoryLogger, runInProcess, startHarness, type Harness } from "./support/runner-harness.ts";

void describe("runner prewarming (oci)", () => {
  let h: Harness;
  let slot: SlotInfo;
  let cacheDir: string;
  let skip: string | false = false;
  /** What the sandbox factory logged: message and job id. */
  const factoryLog: Array<{ msg: string; jobId: unknown }> = [];
  const factory = new CrunSandboxFactory({
    clock: systemClock, logger: { info: (f, msg) => factoryLog.push({ msg, jobId: f.jobId }), warn: (f, msg) => factoryLog.push({ msg, jobId: f.jobId }) },
  });

  before(async () => {
    h = await startHarness();
    try {
      await factory.prepare();
    } catch (err) {
      skip = `crun backend unavailable here: ${(err as Error).message}`;
    }
    // A slot range of its own: parallel test runs never share uid ranges, cgroups or container names.
    const index = randomInt(30_000, 40_000);
    slot = { ...slotInfo(index, join(h.root, "slots")), workDir: join(h.root, "slots", `slot-${index}`, "work") };
    mkdirSync(join(h.root, "slots", `slot-${index}`), { recursive: true, mode: 0o711 });
    cacheDir = join(h.root, "cache");
    mkdirSync(cacheDir, { mode: 0o711 });
  });
  after(async () => {
    await factory.close();
    if (!skip) await factory.reapSlot(slot);
    await h?.close();
  });

  /** Submits `spec`, runs one prewarming runner, closes the factory as its owner does; checks the slot is empty. */
  async function runOne(limits: ReturnType<typeof jobSpec>["limits"]) {
    const jobId = await h.api.submit(jobSpec({ limits, steps: [{ name: "s", run: "echo ran-$DELTACI_STEP_NAME" }] }));
    const logger = memoryLogger();
    try {
      const exit = await runInProcess(h, factory, { prewarm: true, slot, cacheDir, logger });
      await factory.close();
      const job = await h.api.waitDone(jobId, 60_000);
      assert.equal(job.state, "succeeded", logger.lines.join("\n"));
      assert.equal(exit.code, 0);
      assert.match((await h.api.log(jobId)).toString(), /ran-s/);
      assert.deepEqual(await factory.inspectSlot(slot), [], "nothing left in the slot");
      return { jobId, took: factoryLog.some((l) => l.msg === "took a prewarmed sandbox" && l.jobId === jobId) };
    } catch (err) {
      await h.api.cancel(jobId, "hard").catch(() => {});
      throw new Error(`${(err as Error).message}\nrunner log:\n${logger.lines.join("\n")}`, { cause: err });
    }
  }

  const small = { timeoutMs: 120_000, cpus: 1, memoryMiB: 384, diskMiB: 128, pids: 200, logMiB: 16 };

  void it("a job of another shape than the prewarmed one builds its own, and its shape is remembered", { timeout: 180_000 }, async (t) => {
    if (skip) return t.skip(skip);
    const first = await runOne(small);
    assert.equal(first.took, false, "nothing remembered yet: the defaults were prewarmed, not this shape");
    const saved = JSON.parse(readFileSync(join(cacheDir, "warm-shape.json"), "utf8")) as { limits: unknown };
    assert.deepEqual(saved.limits, small);
  });

  void it("the next job of the remembered shape takes the sandbox prewarmed while its runner registered", { timeout: 180_000 }, async (t) => {
    if (skip) return t.skip(skip);
    // the shape a previous job left (also when this test runs alone)
    await rememberShape(join(cacheDir, "warm-shape.json"), jobSpec({ steps: [], limits: small }));
    // The timeout and log limit are not part of the shape.
    const next = await runOne({ ...small, timeoutMs: 90_000, logMiB: 8 });
    assert.equal(next.took, true, `the job took the prewarmed sandbox; factory log: ${JSON.stringify(factoryLog)}`);
  });

  void it("an idle runner's prewarmed sandbox is disposed of when the factory is closed", { timeout: 180_000 }, async (t) => {
    if (skip) return t.skip(skip);
    const logger = memoryLogger();
    const stop = new AbortController();
    const running = runInProcess(h, factory, { prewarm: true, slot, cacheDir, logger, signal: stop.signal });
    for (let i = 0; i < 2400 && !logger.lines.some((l) => l.startsWith("info prewarm done")); i++) await delay(25);
    stop.abort(new Error("test over"));
    const exit = await running;
    assert.equal(exit.reason, "stopped", logger.lines.join("\n"));
    assert.equal((await factory.inspectSlot(slot)).filter((l) => l.startsWith("container ")).length, 1, "the warm container waits for a job");
    await factory.close();
    assert.deepEqual(await factory.inspectSlot(slot), [], "close() disposed of it");
  });
});
