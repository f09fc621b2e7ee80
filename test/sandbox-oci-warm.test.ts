/** Prewarmed oci sandboxes: the job takes the container built before it arrived. */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { runStep } from "../src/sandbox/conformance.ts";
import { detectCgroupLayout, JobCgroup } from "../src/sandbox/oci/cgroups.ts";
import type { SandboxLogger } from "../src/sandbox/types.ts";
import { ociTestEnv } from "./support/sandbox-harness.ts";

const messages: string[] = [];
const logger: SandboxLogger = { info: (_f, m) => messages.push(m), warn: (_f, m) => messages.push(m) };
const env = ociTestEnv(logger);
after(async () => {
  await env.factory.close();
  const reaped = await env.cleanup();
  assert.deepEqual(reaped.filter((r) => !r.startsWith("cgroup ") || !/slot-\d+$/.test(r)), [], "nothing left for the reaper but empty slot cgroups");
});

async function containersOf(slotSpec: Parameters<typeof env.factory.inspectSlot>[0]): Promise<string[]> {
  return (await env.factory.inspectSlot(slotSpec)).filter((l) => l.startsWith("container "));
}

void test("a job takes the container prewarmed for its shape", { timeout: 180_000 }, async () => {
  const archive = await env.makeArchive({ "hello.txt": "hi\n" });
  const spec = env.spec({ sourceArchive: archive });
  void env.factory.prewarm(spec);
  void env.factory.prewarm(spec); // a second call for the same shape builds nothing more
  let warm: string[] = [];
  for (let i = 0; i < 2400 && warm.length === 0; i++) {
    warm = await containersOf(spec.slot);
    if (warm.length === 0) await delay(25);
  }
  assert.equal(warm.length, 1, "one warm container is built before any job");
  const sb = await env.factory.create(spec);
  assert.deepEqual(await containersOf(spec.slot), warm, "the job runs in the warm container");
  assert.ok(messages.includes("took a prewarmed sandbox"));
  const r = await runStep(sb, "cat hello.txt; id -u");
  assert.equal(r.stdout.toString(), "hi\n0\n", r.stderr.toString());
  await sb.dispose();
  assert.deepEqual(await env.factory.inspectSlot(spec.slot), []);
});

void test("a job that needs an egress allowlist is never served a prewarmed sandbox", { timeout: 180_000 }, async () => {
  const spec = env.spec();
  void env.factory.prewarm({ ...spec, network: { egress: "allowlist", allow: ["example.invalid:443"] } });
  void env.factory.prewarm(spec);
  const job = { ...spec, network: { egress: "allowlist" as const, allow: ["example.invalid:443"] } };
  messages.length = 0;
  const sb = await env.factory.create(job);
  assert.equal(messages.includes("took a prewarmed sandbox"), false);
  const r = await runStep(sb, 'printf %s "$https_proxy"');
  assert.match(r.stdout.toString(), /^http:\/\/127\.0\.0\.1:\d+$/, "the job got its own egress proxy");
  await sb.dispose();
  await env.factory.close();
  assert.deepEqual(await env.factory.inspectSlot(spec.slot), [], "the warm sandbox of the other shape was disposed of");
});

void test("a prewarmed sandbox whose init died while it waited is replaced, not handed to the job", { timeout: 180_000 }, async () => {
  const spec = env.spec();
  await env.factory.prewarm(spec);
  const [warm] = await containersOf(spec.slot);
  assert.ok(warm, "a warm container exists");
  const cgroup = new JobCgroup(detectCgroupLayout(), `/deltaci/slot-${spec.slot.index}/${warm.replace(/^container /, "")}`);
  for (const pid of await cgroup.pids()) process.kill(pid, "SIGKILL");
  // Spin without a turn of the event loop (pids() reads synchronously): the init is gone, but
  // its channel's end is not seen yet when create() is called, the tightest case.
  const deadline = Date.now() + 10_000;
  while ((await cgroup.pids()).length > 0 && Date.now() < deadline);
  assert.deepEqual(await cgroup.pids(), [], "the warm container's processes exited");
  messages.length = 0;
  const sb = await env.factory.create(spec);
  assert.ok(messages.includes("the prewarmed sandbox died while it waited: building a new one"));
  const r = await runStep(sb, "echo works");
  assert.equal(r.stdout.toString(), "works\n");
  await sb.dispose();
  assert.deepEqual(await env.factory.inspectSlot(spec.slot), []);
});
