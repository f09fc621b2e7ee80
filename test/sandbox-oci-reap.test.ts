/** A SIGKILLed runner's job dies with it; reapSlot removes what it left in its slot. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomInt } from "node:crypto";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { hostProcessesWith } from "../src/sandbox/conformance.ts";
import { ociTestEnv } from "./support/sandbox-harness.ts";

const env = ociTestEnv();
after(async () => {
  await env.cleanup();
});

for (const egress of ["none", "allowlist"]) {
  void test(`reapSlot cleans up after a runner killed mid-step (network ${egress})`, { timeout: 180_000 }, async () => {
    const slot = env.spec().slot;
    const marker = String(randomInt(10_000_000, 99_999_999));
    const fixture = new URL("./fixtures/sandbox-crash-runner.ts", import.meta.url).pathname;
    const child = spawn(process.execPath, ["--import", "tsx", fixture, String(slot.index), slot.workDir.replace(/\/slot-\d+$/, ""), marker, egress], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on("data", (d: Buffer) => d.toString().includes("ready") && resolve());
        child.once("exit", (code) => reject(new Error(`crash runner exited early with ${code}`)));
      });
    } finally {
      child.kill("SIGKILL");
    }
    await new Promise((resolve) => (child.exitCode === null && child.signalCode === null ? child.once("exit", resolve) : resolve(null)));
    // The runner's end of the init's control channel closed with it: init exits, and the kernel
    // ends every process of the container's pid namespace, without waiting for a reaper.
    for (let i = 0; i < 600 && hostProcessesWith(`sleep ${marker}`).length > 0; i++) await delay(25);
    assert.deepEqual(hostProcessesWith(`sleep ${marker}`), [], "the step's process died with the runner");
    const left = await env.factory.inspectSlot(slot);
    assert.ok(left.some((l) => l.startsWith("container ")), `a container is left: ${left.join(", ")}`);
    assert.ok(left.some((l) => l.startsWith("mount ")), "mounts are left");
    mkdirSync(join(slot.workDir, "runner"), { recursive: true });
    writeFileSync(join(slot.workDir, "runner", "keep.txt"), "the runner's own files are not the sandbox's to reap");
    const reaped = await env.factory.reapSlot(slot);
    assert.equal(existsSync(join(slot.workDir, "runner", "keep.txt")), true);
    for (const item of left.filter((l) => /^(container|mount) /.test(l))) assert.ok(reaped.includes(item), `reaped ${item}`);
    assert.deepEqual(await env.factory.inspectSlot(slot), []);
    assert.deepEqual(hostProcessesWith(`sleep ${marker}`), []);
  });
}
