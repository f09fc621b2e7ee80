import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { test } from "node:test";
import { DeltaError } from "../../base/errors.ts";
import { assertCgroupSupport, cgroupDirs, cgroupProblems, detectCgroupLayout, removeCgroupTree, type CgroupHostFacts } from "./cgroups.ts";

const HYBRID = `30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw`;
const V1 = HYBRID.split("\n").slice(0, -1).join("\n") + "\n41 30 0:38 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct";
const V2 = "30 22 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot";

void test("hybrid: v1 controllers plus the cgroup2 mount that crun 1.8 refuses", () => {
  const l = detectCgroupLayout(HYBRID);
  assert.equal(l.kind, "v1");
  assert.equal(l.kind === "v1" && l.hybridUnified, "/sys/fs/cgroup/unified");
  assert.equal(l.kind === "v1" && l.controllers.get("memory"), "/sys/fs/cgroup/memory");
  assert.equal(l.kind === "v1" && l.controllers.get("name=systemd"), "/sys/fs/cgroup/systemd");
});

void test("pure v1: no wrapper needed; co-mounted controllers map to one dir", () => {
  const l = detectCgroupLayout(V1);
  assert.equal(l.kind === "v1" && l.hybridUnified, null);
  assert.equal(l.kind === "v1" && l.controllers.get("cpuacct"), "/sys/fs/cgroup/cpu,cpuacct");
  assert.ok(cgroupDirs(l, "/deltaci/slot-1/x").includes("/sys/fs/cgroup/memory/deltaci/slot-1/x"));
});

void test("pure v2: one hierarchy", () => {
  const l = detectCgroupLayout(V2);
  assert.deepEqual(l, { kind: "v2", root: "/sys/fs/cgroup" });
  assert.deepEqual(cgroupDirs(l, "/deltaci/slot-1/x"), ["/sys/fs/cgroup/deltaci/slot-1/x"]);
});

const FULL_CAPS = "CapEff:\t000001ffffffffff\n";
const NO_SYS_RESOURCE = "CapEff:\t000001fffeffffff\n"; // this machine's root: all but CAP_SYS_RESOURCE
const LIMITS = (hard: string) => `Limit                     Soft Limit           Hard Limit           Units\nMax locked memory         8388608              ${hard}              bytes\n`;
const HYBRID_PROC_CGROUPS = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t7\t1\nmemory\t4\t119\t1\npids\t8\t7\t1\nhugetlb\t0\t1\t1\n";
const facts = (o: Partial<CgroupHostFacts> = {}): CgroupHostFacts => ({ v2Controllers: "cpuset cpu io memory pids\n", procCgroups: "", status: FULL_CAPS, limits: LIMITS("unlimited"), ...o });

void test("preflight: v1 and v2 with the memory, pids and cpu controllers pass", () => {
  assert.deepEqual(cgroupProblems(detectCgroupLayout(HYBRID), facts()), []);
  assert.deepEqual(cgroupProblems(detectCgroupLayout(V1), facts()), []);
  assert.deepEqual(cgroupProblems(detectCgroupLayout(V2), facts()), []);
});

void test("preflight: a v1 host without the pids hierarchy is refused, naming controller and limit", () => {
  const l = detectCgroupLayout(V1.split("\n").filter((line) => !line.includes("pids")).join("\n"));
  assert.deepEqual(cgroupProblems(l, facts()), ["no cgroup v1 hierarchy offers the pids controller needed to enforce the job limits pids"]);
});

void test("preflight: cgroup2 of a hybrid host (controllers bound to v1) is refused with the reason", async () => {
  const l = detectCgroupLayout(V2);
  const f = facts({ v2Controllers: "hugetlb\n", procCgroups: HYBRID_PROC_CGROUPS, status: NO_SYS_RESOURCE, limits: LIMITS("8388608") });
  assert.deepEqual(cgroupProblems(l, f), [
    "cgroup v2 at /sys/fs/cgroup does not offer the memory, pids, cpu controllers needed to enforce the job limits memoryMiB, pids, cpus (memory, pids, cpu bound to a cgroup v1 hierarchy, see /proc/cgroups: a hybrid host's cgroup2 gets no such controller) [available: hugetlb]",
    "crun loads the cgroup v2 device filter (eBPF) only after raising RLIMIT_MEMLOCK, but this process lacks CAP_SYS_RESOURCE and its hard limit is 8388608 bytes",
  ]);
  await assert.rejects(assertCgroupSupport(l, f), (e: unknown) => e instanceof DeltaError && e.code === "E_SANDBOX" && /memory, pids, cpu controllers/.test(e.message));
});

void test("preflight: RLIMIT_MEMLOCK matters only on v2, and only without CAP_SYS_RESOURCE and an unlimited hard limit", () => {
  const tight = { status: NO_SYS_RESOURCE, limits: LIMITS("8388608") };
  assert.deepEqual(cgroupProblems(detectCgroupLayout(HYBRID), facts(tight)), []);
  assert.equal(cgroupProblems(detectCgroupLayout(V2), facts(tight)).length, 1);
  assert.deepEqual(cgroupProblems(detectCgroupLayout(V2), facts({ status: NO_SYS_RESOURCE, limits: LIMITS("unlimited") })), []);
  assert.deepEqual(cgroupProblems(detectCgroupLayout(V2), facts({ limits: LIMITS("8388608") })), []);
});

void test("removeCgroupTree removes a real cgroup with nested children in every hierarchy, and is idempotent", async (t) => {
  const layout = detectCgroupLayout();
  const path = `/deltaci-test-${process.pid}/job`;
  const dirs = cgroupDirs(layout, path);
  try {
    for (const d of dirs) mkdirSync(`${d}/child/grandchild`, { recursive: true });
  } catch (e) {
    t.skip(`cannot make cgroups here: ${String(e)}`);
    return;
  }
  const removed = await removeCgroupTree(layout, path);
  for (const d of dirs) {
    assert.equal(existsSync(d), false, d);
    // deepest first: a child is reported before its parent
    assert.ok(removed.indexOf(`${d}/child/grandchild`) < removed.indexOf(`${d}/child`) && removed.indexOf(`${d}/child`) < removed.indexOf(d), d);
  }
  assert.equal(removed.length, dirs.length * 3);
  assert.deepEqual(await removeCgroupTree(layout, path), []);
  await removeCgroupTree(layout, `/deltaci-test-${process.pid}`);
});
