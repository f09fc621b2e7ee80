/** The Sandbox conformance suite against both backends (real crun for `oci`). */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { sandboxConformance } from "../src/sandbox/conformance.ts";
import { capturingLogger, ociTestEnv, processTestEnv } from "./support/sandbox-harness.ts";

const proc = processTestEnv();
after(() => proc.cleanup());
sandboxConformance("process", async () => proc);

const oci = ociTestEnv();
after(async () => {
  const reaped = await oci.cleanup();
  assert.deepEqual(reaped.filter((r) => !r.startsWith("cgroup ") || !/slot-\d+$/.test(r)), [], "only the empty slot cgroups are left for the reaper");
});
sandboxConformance("oci", async () => oci);

void test("the process backend warns every time it is created", async () => {
  const logger = capturingLogger();
  const env = processTestEnv(logger);
  try {
    for (let i = 0; i < 2; i++) await (await env.factory.create(env.spec())).dispose();
    assert.equal(logger.warnings.filter((w) => /NO isolation/.test(w)).length, 2);
  } finally {
    env.cleanup();
  }
});
