/**
 * A runner with the hardened `oci` sandbox killed with SIGKILL mid-job: the controller reaps its
 * slot through the sandbox's reaper (container, cgroups, mounts, loop device, job dirs), the
 * server retries the job on a fresh runner, and nothing is left on the host. Real crun.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chmod } from "node:fs/promises";
import { pino } from "pino";
import { controllerOptionsFromFlags, startLocalController } from "../src/cli/commands/controller.ts";
import { startHarness } from "./controller-harness.ts";
import { cgroupDirs, crunIds, loopsUnder, mountsUnder } from "./support/leftovers.ts";

void test("SIGKILL of an oci runner mid-job: its container, cgroups, mounts and files are reaped; the job is retried", async (t) => {
  const h = await startHarness({ leaseTtlMs: 3000 });
  t.after(() => h.cleanup());
  await chmod(h.dir, 0o711); // the sandbox's mapped uids must traverse to the slot dirs
  // a slot range of our own: slots select uid ranges, cgroups and container names host-wide
  const slotBase = 30_000 + Math.floor(Math.random() * 20_000);
  const opts = controllerOptionsFromFlags(
    { maxRunners: "1", minIdle: "0", pool: [], isolation: "oci", workRoot: h.workRoot, runnerIdleTimeout: "2m", idleGrace: "500ms", slotBase: String(slotBase), runnerMode: "process" },
    { serverUrl: h.server.url, controllerToken: h.server.controllerToken },
  );
  const ctl = await startLocalController(opts, pino({ level: "silent" }));
  t.after(() => ctl.stop({ runners: "terminate" }));
  const prefix = `deltaci-s${slotBase}-`;

  const id = await h.submit({ name: "oci-victim", steps: [{ name: "s", run: 'if [ "$DELTACI_ATTEMPT" = 1 ]; then sleep 300; fi; echo ok' }] });
  await h.waitJob(id, (j) => j.state === "running", 180_000);
  await h.waitFor("the job's container", () => crunIds(prefix).length === 1, 60_000);
  assert.ok(mountsUnder(h.workRoot).length > 0 || loopsUnder(h.workRoot).length > 0 || cgroupDirs(slotBase).length > 0, "precondition: the sandbox holds host objects");
  const [runner] = ctl.provider.list();
  assert.ok(runner);
  process.kill(Number(runner.handle), "SIGKILL");

  const job = await h.waitJob(id, undefined, 180_000);
  assert.equal(job.state, "succeeded", JSON.stringify(job.failure));
  assert.equal(job.attempts[0]?.state, "lost");
  const reaped = (await ctl.metrics.reaped.get()).values.reduce((n, v) => n + v.value, 0);
  assert.ok(reaped > 0, "the controller reaped the dead runner's leftovers");
  await h.waitFor("no runner left", () => ctl.provider.list().length === 0, 60_000);
  assert.deepEqual(crunIds(prefix), [], "no container left");
  assert.deepEqual(mountsUnder(h.workRoot), [], "no mount left");
  assert.deepEqual(loopsUnder(h.workRoot), [], "no loop device left");
  assert.deepEqual(cgroupDirs(slotBase), [], "no cgroup left");
  // stopped with its runners, the controller also removes the slots' own (empty) parent cgroups
  await ctl.stop({ runners: "terminate" });
  const slotCgroups = ["memory", "pids", "cpu", "freezer"].map((c) => `/sys/fs/cgroup/${c}/deltaci/slot-${slotBase}`).filter((d) => existsSync(d));
  assert.deepEqual(slotCgroups, []);
});
