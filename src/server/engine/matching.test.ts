import { test } from "node:test";
import assert from "node:assert/strict";
import { mismatch, parseReqKey, reqKeyOf, unschedulableReason, type Pool } from "./matching.ts";

const caps = { os: "linux", arch: "x64", labels: ["linux", "docker"], resources: { cpus: 4, memoryMiB: 8192, diskMiB: 10_000 } };
const req = (over: Partial<ReturnType<typeof parseReqKey>> = {}) => ({ os: null, arch: null, labels: ["linux"], resources: { cpus: 1, memoryMiB: 512, diskMiB: 100 }, ...over });

void test("labels, os, arch and resources must all fit", () => {
  assert.equal(mismatch(req(), caps), null);
  assert.match(mismatch(req({ labels: ["gpu"] }), caps) ?? "", /labels \[gpu\]/);
  assert.match(mismatch(req({ os: "windows" }), caps) ?? "", /os windows/);
  assert.match(mismatch(req({ arch: "arm64" }), caps) ?? "", /arch arm64/);
  assert.match(mismatch(req({ resources: { cpus: 8, memoryMiB: 1, diskMiB: 1 } }), caps) ?? "", /8 cpus/);
  assert.match(mismatch(req({ resources: { cpus: 1, memoryMiB: 9000, diskMiB: 1 } }), caps) ?? "", /memory/);
  assert.match(mismatch(req({ resources: { cpus: 1, memoryMiB: 1, diskMiB: 20_000 } }), caps) ?? "", /disk/);
});

void test("requirement keys round-trip and are canonical", () => {
  const r = req({ labels: ["a", "b"], os: "linux" });
  assert.deepEqual(parseReqKey(reqKeyOf(r)), r);
  assert.equal(reqKeyOf(r), reqKeyOf({ ...r, resources: { ...r.resources } }));
});

void test("unschedulable only when pools are declared and none fits", () => {
  const pool: Pool = { name: "p", ...caps, max: 2 };
  assert.equal(unschedulableReason(req({ labels: ["gpu"] }), []), null);
  assert.equal(unschedulableReason(req(), [pool]), null);
  assert.match(unschedulableReason(req({ labels: ["gpu"] }), [pool]) ?? "", /pool p: needs labels \[gpu\]/);
  assert.match(unschedulableReason(req(), [{ ...pool, max: 0 }]) ?? "", /max 0/);
});
