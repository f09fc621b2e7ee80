import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { slotInfo } from "../sandbox/slots.ts";
import { defaultShape, rememberShape, sameShape, warmSpec, WarmShapes } from "./warm-shape.ts";

const dir = mkdtempSync(join(tmpdir(), "deltaci-warm-shape-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const slot = slotInfo(7, dir);
const limits = { timeoutMs: 60_000, cpus: 1, memoryMiB: 256, diskMiB: 64, pids: 128, logMiB: 8 };

void test("without a remembered shape, the job defaults are prewarmed", async () => {
  const spec = await warmSpec(join(dir, "none.json"), slot);
  assert.deepEqual(spec, { slot, ...defaultShape(), network: { egress: "none" }, caches: [] });
  assert.deepEqual(await warmSpec(null, slot), spec);
});

void test("the last job's shape is remembered for the next runner, atomically", async () => {
  const file = join(dir, "shape.json");
  const image = { kind: "oci" as const, ref: "debian:12", digest: `sha256:${"a".repeat(64)}` };
  await rememberShape(file, { image, limits, network: { egress: "none" }, caches: [] });
  assert.deepEqual(await warmSpec(file, slot), { slot, image, limits, network: { egress: "none" }, caches: [] });
  assert.deepEqual(readdirSync(dir).filter((n) => n.endsWith(".tmp")), [], "no temp file left");
});

void test("shapes that cannot be prewarmed (allowlist, caches) are not remembered", async () => {
  const file = join(dir, "kept.json");
  await rememberShape(file, { image: { kind: "host" }, limits, network: { egress: "none" }, caches: [] });
  await rememberShape(file, { image: { kind: "host" }, limits: { ...limits, pids: 9 }, network: { egress: "allowlist", allow: ["example.org:443"] }, caches: [] });
  await rememberShape(file, { image: { kind: "host" }, limits: { ...limits, pids: 9 }, network: { egress: "none" }, caches: [{ key: "k", path: "/c", scope: "s", readOnly: false }] });
  assert.equal((await warmSpec(file, slot)).limits.pids, 128);
});

void test("a torn or foreign file is ignored: the defaults are prewarmed", async () => {
  const file = join(dir, "bad.json");
  for (const text of ['{"image":{"kind":"host"},"limits":{"cpus":1', JSON.stringify({ image: { kind: "host" }, limits: { ...limits, memoryMiB: -1 } }), JSON.stringify({ image: { kind: "host" }, limits, extra: 1 })]) {
    writeFileSync(file, text);
    assert.deepEqual((await warmSpec(file, slot)).limits, defaultShape().limits, text);
  }
});

void test("a process's warm shapes: the file is read once and written only when the shape changes", async () => {
  const file = join(dir, "shared.json");
  const host = { kind: "host" as const };
  await rememberShape(file, { image: host, limits, network: { egress: "none" }, caches: [] });
  const shapes = new WarmShapes(file);
  assert.deepEqual((await shapes.spec(slot)).limits, limits, "read from the file");
  rmSync(file);
  assert.deepEqual((await shapes.spec(slot)).limits, limits, "kept: the file is not read again");
  await shapes.remember({ image: host, limits, network: { egress: "none" }, caches: [] });
  assert.ok(!existsSync(file), "the same shape as the file held: not written");
  const bigger = { ...limits, memoryMiB: 512 };
  await shapes.remember({ image: host, limits: bigger, network: { egress: "none" }, caches: [] });
  assert.deepEqual(JSON.parse(readFileSync(file, "utf8")), { image: host, limits: bigger }, "a new shape is written");
  assert.deepEqual((await shapes.spec(slot)).limits, bigger);
  await shapes.remember({ image: host, limits: { ...limits, pids: 9 }, network: { egress: "allowlist", allow: ["example.org:443"] }, caches: [] });
  assert.deepEqual((await shapes.spec(slot)).limits, bigger, "one that cannot be prewarmed is not remembered");
});

void test("a job has the shape read at a runner's start whatever the order of its keys; another image or limit is another shape", async () => {
  const file = join(dir, "same.json");
  const image = { kind: "oci" as const, ref: "debian:12", digest: `sha256:${"b".repeat(64)}` };
  await rememberShape(file, { image, limits, network: { egress: "none" }, caches: [] });
  const read = await warmSpec(file, slot);
  const reordered = Object.fromEntries(Object.entries(limits).reverse()) as typeof limits;
  assert.equal(sameShape({ image: { digest: image.digest, ref: image.ref, kind: "oci" }, limits: reordered }, read), true);
  assert.equal(sameShape({ image, limits: { ...limits, pids: 129 } }, read), false);
  assert.equal(sameShape({ image: { ...image, ref: "debian:13" }, limits }, read), false);
  assert.equal(sameShape({ image: { kind: "host" }, limits }, read), false);
});
