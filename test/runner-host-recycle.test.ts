/**
 * Slot recycling through a real `deltaci runner-host` process (one slot, oci): the host hands
 * its slot to the next session without a reap while the sandbox factory vouches for it, the next
 * sandbox is prewarmed on the spare job disk, and the next session's job sees nothing the
 * previous job wrote (workspace, home, /tmp). The disk-level proof (raw block device, sparse data,
 * xattrs) is test/sandbox-oci-recycle.test.ts; this one covers the host's path to it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, randomInt } from "node:crypto";
import { chmod, mkdir } from "node:fs/promises";
import { startHarness } from "./controller-harness.ts";
import { reapHostSlots, registrationTokens, startHostClient } from "./support/host-client.ts";
import { cgroupDirs, crunIds, loopsUnder, mountsUnder } from "./support/leftovers.ts";

void test("runner host: the next session in a slot reuses it unreaped and sees nothing of the previous job", { timeout: 300_000 }, async (t) => {
  const h = await startHarness();
  // undone last first: the host's slots are reaped before the temp dir goes
  const undo: Array<() => Promise<unknown>> = [() => h.cleanup()];
  t.after(async () => {
    for (const u of undo.reverse()) await u().catch(() => {});
  });
  await chmod(h.dir, 0o711);
  await mkdir(h.workRoot, { recursive: true, mode: 0o711 });
  const slot = randomInt(30_000, 50_000);
  const host = await startHostClient({ dir: h.dir, workRoot: h.workRoot, slotBase: slot, slots: 1, isolation: "oci" });
  undo.push(async () => {
    await host.kill();
    await reapHostSlots({ workRoot: h.workRoot, slotBase: slot, slots: 1, isolation: "oci" });
  });
  const marker = `marker-${randomBytes(12).toString("hex")}`;
  const [tokA, tokB] = await registrationTokens(h.server.url, h.server.controllerToken, 2);

  const a = await h.submit({
    name: "writer", env: { M: marker },
    steps: [{ name: "write", run: 'echo "$M" > /workspace/a; echo "$M" > "$HOME/a"; echo "$M" > /tmp/a; mkdir -p /workspace/d && echo "$M" > /workspace/d/b' }],
  });
  const exitA = await host.session("s-a", tokA as string, h.server.url);
  assert.equal(exitA.code, 0, exitA.reason);
  assert.equal((await h.job(a)).state, "succeeded");

  const b = await h.submit({
    name: "reader", env: { M: marker },
    steps: [{ name: "look", run: 'ls -A /workspace; if grep -rl "$M" /workspace "$HOME" /tmp 2>/dev/null; then echo "SEEN"; exit 3; fi; test -z "$(ls -A /workspace)"' }],
  });
  const exitB = await host.session("s-b", tokB as string, h.server.url);
  assert.equal(exitB.code, 0, exitB.reason);
  const jb = await h.job(b);
  assert.equal(jb.state, "succeeded", `the next job in the slot saw the previous one's files: ${JSON.stringify(jb.failure)}`);
  assert.deepEqual(exitB.reaped, [], "the slot went to the next session without a reap (the factory vouched for it)");

  await host.stop();
  assert.deepEqual(host.events.filter((e) => e.type === "refused"), []);
  assert.deepEqual(crunIds(`deltaci-s${slot}-`), [], "no container left");
  assert.deepEqual(mountsUnder(h.workRoot), [], "no mount left");
  assert.deepEqual(loopsUnder(h.workRoot), [], "no loop device left");
  assert.deepEqual(cgroupDirs(slot), [], "no cgroup left");
});
