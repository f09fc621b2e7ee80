/**
 * The job cgroup on a v1 host (real crun): the container's processes are in it in every
 * hierarchy, the job's limits and the device rules are written, and a host block device cannot be
 * opened from it, nor made and opened from the job.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { runStep } from "../src/sandbox/conformance.ts";
import { containerName } from "../src/sandbox/job-names.ts";
import { cgroupDirs, detectCgroupLayout, JobCgroup } from "../src/sandbox/oci/cgroups.ts";
import { mountTableBelow } from "../src/sandbox/oci/job-disk.ts";
import type { Sandbox, SandboxSpec } from "../src/sandbox/types.ts";
import { ociTestEnv } from "./support/sandbox-harness.ts";

/**
 * The device rules crun 1.8.1 writes for the bundle's deny-all device list: mknod of any node
 * (opening one is what is guarded), and null, random, full, tty, zero, urandom, console, pts, ptmx.
 */
const DEVICE_RULES = ["c *:* m", "b *:* m", "c 1:3 rwm", "c 1:8 rwm", "c 1:7 rwm", "c 5:0 rwm", "c 1:5 rwm", "c 1:9 rwm", "c 5:1 rwm", "c 136:* rwm", "c 5:2 rwm"];

const env = ociTestEnv();
const layout = detectCgroupLayout();
let sb: Sandbox;
let spec: SandboxSpec;
let path: string;

const read = (controller: string, file: string): string => {
  assert.equal(layout.kind, "v1");
  const mount = layout.controllers.get(controller);
  assert.ok(mount !== undefined, `a v1 hierarchy has ${controller}`);
  return readFileSync(join(mount, path, file), "utf8");
};

/** Runs a root shell on the host inside the job's devices cgroup (only that hierarchy). */
const inDevicesCgroup = (script: string) => {
  const procs = join(layout.kind === "v1" ? (layout.controllers.get("devices") ?? "") : "", path, "cgroup.procs");
  const r = spawnSync("sh", ["-c", `echo $$ > ${procs} || exit 99; ${script}`], { encoding: "utf8" });
  return { code: r.status, err: r.stderr };
};

void describe("oci job cgroup (cgroup v1)", { timeout: 300_000, skip: layout.kind !== "v1" ? "this host has no cgroup v1 hierarchies (device rules are an eBPF filter on v2)" : false }, () => {
  before(async () => {
    spec = env.spec({ limits: { timeoutMs: 600_000, cpus: 0.5, memoryMiB: 192, diskMiB: 64, pids: 77, logMiB: 64 } });
    sb = await env.factory.create(spec);
    path = `/deltaci/slot-${spec.slot.index}/${containerName(spec.slot.index, spec.jobId)}`;
  });
  after(async () => {
    await sb.dispose();
    assert.deepEqual(await env.leftovers(spec), []);
    for (const dir of cgroupDirs(layout, path)) assert.throws(() => readFileSync(join(dir, "cgroup.procs")), "the job cgroup is removed in every hierarchy");
    await env.cleanup();
  });

  void it("holds the container's init in every hierarchy; inside, each is the job's cgroup namespace root", async () => {
    const [init] = await new JobCgroup(layout, path).pids();
    assert.ok(init !== undefined);
    for (const dir of cgroupDirs(layout, path)) assert.equal(readFileSync(join(dir, "cgroup.procs"), "utf8"), `${init}\n`, dir);
    const r = await runStep(sb, "grep -v '^0::' /proc/self/cgroup | cut -d: -f3 | sort -u");
    assert.equal(r.stdout.toString(), "/\n");
  });

  void it("has the job's limits and the device rules", () => {
    assert.equal(read("memory", "memory.limit_in_bytes"), `${192 * 1024 * 1024}\n`);
    assert.equal(read("pids", "pids.max"), "77\n");
    assert.equal(read("cpu", "cpu.cfs_period_us"), "100000\n");
    assert.equal(read("cpu", "cpu.cfs_quota_us"), "50000\n");
    assert.equal(read("devices", "devices.list"), DEVICE_RULES.map((r) => `${r}\n`).join(""));
    assert.notEqual(read("cpuset", "cpuset.cpus").trim(), "");
  });

  void it("cannot open a host block device from the job's cgroup, nor make one in the job", async () => {
    const jobDir = dirname(dirname(sb.workspaceOnHost));
    const [loop] = mountTableBelow(jobDir).loops; // the job's own disk
    assert.ok(loop !== undefined);
    // positive controls: outside the cgroup root opens it; inside, an allowed character device opens
    assert.equal(spawnSync("head", ["-c", "1", loop]).status, 0);
    assert.deepEqual(inDevicesCgroup("head -c 1 /dev/zero > /dev/null"), { code: 0, err: "" });
    const denied = inDevicesCgroup(`head -c 1 ${loop} > /dev/null`);
    assert.notEqual(denied.code, 0);
    assert.match(denied.err, /Operation not permitted/);
    // a node made anew for the same device (mknod is allowed there, as crun allows it): opening it is not
    const node = join(dirname(jobDir), `blk-${process.pid}`);
    const [major, minor] = readFileSync(`/sys/class/block/${loop.replace("/dev/", "")}/dev`, "utf8").trim().split(":");
    const made = inDevicesCgroup(`mknod ${node} b ${major} ${minor} && head -c 1 ${node} > /dev/null; rc=$?; rm -f ${node}; exit $rc`);
    assert.notEqual(made.code, 0);
    assert.match(made.err, /Operation not permitted/);
    // the job itself: no mknod of a block device, and none to be found under /dev
    const r = await runStep(sb, `mknod /tmp/b b ${major} ${minor} 2>/dev/null && echo mknod-ok; ls /dev | grep -E '^(loop|sd|vd|nvme|dm-)' ; true`);
    assert.equal(r.stdout.toString(), "");
  });
});
