import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { CONTAINER_CAPS } from "./bundle.ts";
import { exporterInput, hardenSeccomp, toOciSeccomp, type OciSeccomp } from "./seccomp-profile.ts";

const profile = JSON.parse(readFileSync("/usr/share/containers/seccomp.json", "utf8"));
const allowed = (p: OciSeccomp, name: string) => p.syscalls.some((r) => r.action === "SCMP_ACT_ALLOW" && r.names.includes(name) && !r.args?.length);
const denied = (p: OciSeccomp, name: string) => p.syscalls.some((r) => r.action === "SCMP_ACT_ERRNO" && r.names.includes(name) && !r.args?.length);

void test("evaluates capability conditions for the job's real capability set", () => {
  const job = toOciSeccomp(profile, CONTAINER_CAPS, "x64");
  for (const name of ["fanotify_init", "bpf", "perf_event_open", "open_by_handle_at", "init_module", "settimeofday"]) {
    assert.equal(allowed(job, name), false, `${name} not allowed without its capability`);
    assert.equal(denied(job, name), true, `${name} explicitly denied`);
  }
  const admin = toOciSeccomp(profile, [...CONTAINER_CAPS, "CAP_SYS_ADMIN"], "x64");
  assert.equal(allowed(admin, "fanotify_init"), true, "with CAP_SYS_ADMIN the includes rule applies");
  assert.equal(job.syscalls.some((r) => "includes" in r || "excludes" in r), false, "plain OCI: no conditions left");
});

void test("evaluates architecture conditions", () => {
  const amd64 = toOciSeccomp(profile, CONTAINER_CAPS, "x64");
  assert.equal(allowed(amd64, "arch_prctl"), true);
  assert.equal(allowed(amd64, "arm_fadvise64_64"), false);
  assert.deepEqual(amd64.architectures, ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
  const arm = toOciSeccomp(profile, CONTAINER_CAPS, "arm64");
  assert.equal(allowed(arm, "arch_prctl"), false);
});

void test("the hardened layer denies namespaces, mounts and keyrings and filters clone flags", () => {
  const p = hardenSeccomp(toOciSeccomp(profile, CONTAINER_CAPS, "x64"));
  for (const name of ["unshare", "setns", "mount", "umount2", "pivot_root", "keyctl", "add_key", "fsopen", "move_mount"]) {
    assert.equal(allowed(p, name), false, name);
    assert.equal(denied(p, name), true, name);
  }
  const clone = p.syscalls.filter((r) => r.names.includes("clone"));
  assert.equal(clone.length, 1);
  assert.equal(clone[0]?.args?.[0]?.op, "SCMP_CMP_MASKED_EQ");
  assert.match(exporterInput(p), /^default errno 38\narch x86_64\n/);
  assert.match(exporterInput(p), /\nrule allow 1 clone 1 0 masked_eq 2114060288 0\n/);
});
