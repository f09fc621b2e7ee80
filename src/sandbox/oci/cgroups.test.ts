import assert from "node:assert/strict";
import { test } from "node:test";
import { cgroupDirs, detectCgroupLayout } from "./cgroups.ts";

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
