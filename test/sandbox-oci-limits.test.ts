/** Limits end a step as a controlled failure with a specific reason (real crun, real cgroups). */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, describe, it } from "node:test";
import { runStep } from "../src/sandbox/conformance.ts";
import { containerName } from "../src/sandbox/job-names.ts";
import { cgroupDirs, detectCgroupLayout } from "../src/sandbox/oci/cgroups.ts";
import type { Limits } from "../src/protocol/schemas.ts";
import { ociTestEnv } from "./support/sandbox-harness.ts";

const env = ociTestEnv();
const limits = (over: Partial<Limits>): Limits => ({ timeoutMs: 600_000, cpus: 1, memoryMiB: 512, diskMiB: 512, pids: 512, logMiB: 64, ...over });

async function withSandbox(over: Partial<Limits>, fn: (sb: Awaited<ReturnType<typeof env.factory.create>>, spec: ReturnType<typeof env.spec>) => Promise<void>) {
  const spec = env.spec({ limits: limits(over) });
  const sb = await env.factory.create(spec);
  try {
    await fn(sb, spec);
    // the host and the sandbox stay healthy: the next step runs normally
    const next = await runStep(sb, "echo alive");
    assert.equal(next.stdout.toString(), "alive\n");
  } finally {
    await sb.dispose();
    assert.deepEqual(await env.leftovers(spec), []);
  }
}

void describe("oci limits", { timeout: 300_000 }, () => {
  after(async () => {
    await env.cleanup();
  });

  void it("memory: reports memory_limit from the cgroup's OOM record", async () => {
    await withSandbox({ memoryMiB: 64 }, async (sb) => {
      const r = await runStep(sb, "python3 -c \"b = b'x' * (256 * 1024 * 1024); print(len(b))\"");
      assert.equal(r.result.signal ?? String(r.result.exitCode), "137");
      assert.deepEqual(r.result.limit, { reason: "memory_limit", message: "memory limit of 64 MiB exceeded" });
      // an exit with 137 that is not an OOM kill is not reported as one
      const fake = await runStep(sb, "exit 137");
      assert.equal(fake.result.limit, null);
    });
  });

  void it("pids: a fork bomb ends with pids_limit", async () => {
    await withSandbox({ pids: 64 }, async (sb) => {
      const r = await runStep(sb, "bomb() { bomb | bomb & }; bomb; wait; sleep 600", { timeoutMs: 4000 });
      assert.deepEqual(r.result.limit, { reason: "pids_limit", message: "process limit of 64 exceeded" });
    });
  });

  void it("disk: filling the disk ends with disk_quota", async () => {
    await withSandbox({ diskMiB: 64 }, async (sb) => {
      const r = await runStep(sb, "dd if=/dev/zero of=big bs=1M count=200 status=none");
      assert.notEqual(r.result.exitCode, 0);
      assert.match(r.stderr.toString(), /No space left/);
      assert.deepEqual(r.result.limit, { reason: "disk_quota", message: "disk quota of 64 MiB exceeded" });
      await runStep(sb, "rm big");
    });
  });

  void it("timeout: a sleeping step ends with timeout", async () => {
    await withSandbox({}, async (sb) => {
      const r = await runStep(sb, "trap '' TERM; sleep 600", { timeoutMs: 500 });
      assert.deepEqual(r.result.limit, { reason: "timeout", message: "step timeout of 500 ms exceeded" });
      assert.equal(r.result.stopped, false);
    });
  });

  void it("cpus: the CFS quota is set from the limit", async () => {
    await withSandbox({ cpus: 0.5 }, async (_sb, spec) => {
      const layout = detectCgroupLayout();
      const path = `/deltaci/slot-${spec.slot.index}/${containerName(spec.slot.index, spec.jobId)}`;
      const dir = cgroupDirs(layout, path).find((d) => /\/cpu(,cpuacct)?\//.test(d) || layout.kind === "v2");
      assert.ok(dir);
      const quota = layout.kind === "v2" ? readFileSync(`${dir}/cpu.max`, "utf8") : readFileSync(`${dir}/cpu.cfs_quota_us`, "utf8");
      assert.match(quota, /^50000\b/);
    });
  });
});
