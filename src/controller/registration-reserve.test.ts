import { test } from "node:test";
import assert from "node:assert/strict";
import type { Clock } from "../base/clock.ts";
import { RegistrationReserve } from "./registration-reserve.ts";
import type { Pool } from "./types.ts";

const pool = (name: string, labels: string[] = []): Pool => ({
  name, os: "linux", arch: "x64", labels, resources: { cpus: 1, memoryMiB: 512, diskMiB: 1024 }, max: 8, minIdle: 0, isolation: "process",
});

/** A control plane that mints numbered tokens and records each request. */
function fakeApi(fail = () => false) {
  let n = 0;
  const requests: Array<{ count: number; labels: string[]; ttlMs: number }> = [];
  return {
    requests,
    registrations: (count: number, labels: string[], ttlMs: number) => {
      requests.push({ count, labels, ttlMs });
      if (fail()) return Promise.reject(new Error("server down"));
      return Promise.resolve(Array.from({ length: count }, () => `dci_reg_${++n}`));
    },
  };
}

function fakeClock(): Clock & { advance(ms: number): void } {
  let now = 1_000_000;
  return { now: () => now, sleep: () => Promise.resolve(), advance: (ms) => (now += ms) };
}

void test("registration reserve: one mint per `ahead` launches, each token handed out once", async () => {
  const api = fakeApi();
  const reserve = new RegistrationReserve({ api, clock: fakeClock(), ttlMs: 60_000, ahead: () => 4 });
  const p = pool("default", ["linux"]);
  const seen: string[] = [];
  for (let i = 0; i < 10; i++) seen.push(...(await reserve.take(p, 1)));
  seen.push(...(await reserve.take(p, 3)));
  seen.push(...(await reserve.take(p, 2))); // of the 4 held: no request
  assert.equal(new Set(seen).size, seen.length, "no token twice");
  assert.equal(seen.length, 15);
  // 1+4 minted, 4 taken from the reserve, 1+4, 4 more; then 3 wanted and none held: 3+4
  assert.deepEqual(api.requests.map((r) => r.count), [5, 5, 7]);
  assert.ok(api.requests.every((r) => r.ttlMs === 60_000 && r.labels.join() === "linux"));
  assert.equal(reserve.size(p), 2);
});

void test("registration reserve: pools are kept apart (their labels bound their runners)", async () => {
  const api = fakeApi();
  const reserve = new RegistrationReserve({ api, clock: fakeClock(), ttlMs: 60_000, ahead: () => 2 });
  const gpu = pool("gpu", ["gpu"]);
  const plain = pool("plain");
  const a = await reserve.take(gpu, 1);
  const b = await reserve.take(plain, 1);
  assert.deepEqual(api.requests.map((r) => r.labels), [["gpu"], []]);
  assert.notDeepEqual(a, b);
  assert.equal(reserve.size(gpu), 2);
  assert.equal(reserve.size(plain), 2);
});

void test("registration reserve: a token held past half its lifetime is dropped, not handed out", async () => {
  const api = fakeApi();
  const clock = fakeClock();
  const reserve = new RegistrationReserve({ api, clock, ttlMs: 60_000, ahead: () => 3 });
  const p = pool("default");
  const first = await reserve.take(p, 1);
  clock.advance(29_999);
  const second = await reserve.take(p, 1); // still fresh: from the reserve
  assert.equal(api.requests.length, 1);
  clock.advance(1);
  assert.equal(reserve.size(p), 0, "the rest reached half their lifetime");
  const third = await reserve.take(p, 1);
  assert.equal(api.requests.length, 2);
  assert.equal(new Set([...first, ...second, ...third]).size, 3);
});

void test("registration reserve: a failed mint hands out what was held, else rejects; clear() drops the reserve", async () => {
  let down = false;
  const api = fakeApi(() => down);
  const reserve = new RegistrationReserve({ api, clock: fakeClock(), ttlMs: 60_000, ahead: () => 1 });
  const p = pool("default");
  await reserve.take(p, 1);
  down = true;
  assert.equal((await reserve.take(p, 3)).length, 1, "the one held comes back alone");
  await assert.rejects(reserve.take(p, 1), /server down/);
  down = false;
  await reserve.take(p, 1);
  assert.equal(reserve.size(p), 1);
  reserve.clear();
  assert.equal(reserve.size(p), 0);
});

void test("registration reserve: ahead 0 mints exactly what each launch needs", async () => {
  const api = fakeApi();
  const reserve = new RegistrationReserve({ api, clock: fakeClock(), ttlMs: 60_000, ahead: () => 0 });
  await reserve.take(pool("default"), 2);
  await reserve.take(pool("default"), 1);
  assert.deepEqual(api.requests.map((r) => r.count), [2, 1]);
});
