import { test } from "node:test";
import assert from "node:assert/strict";
import { parseDurationMs, parseSizeBytes, formatDurationMs } from "./units.ts";
import { backoffMs } from "./backoff.ts";
import { newToken, hashToken, TOKEN_PATTERN } from "./ids.ts";

void test("durations parse human units and reject junk", () => {
  assert.equal(parseDurationMs("250ms"), 250);
  assert.equal(parseDurationMs("2s"), 2000);
  assert.equal(parseDurationMs("10m"), 600_000);
  assert.equal(parseDurationMs("1h30m"), 5_400_000);
  assert.equal(parseDurationMs("1500"), 1500);
  assert.equal(parseDurationMs(42), 42);
  for (const bad of ["", "2x", "s", "1h 3", "-1s"]) assert.throws(() => parseDurationMs(bad), { code: "E_INVALID" }, bad);
});

void test("sizes parse binary and decimal units", () => {
  assert.equal(parseSizeBytes("512Mi"), 512 * 1024 ** 2);
  assert.equal(parseSizeBytes("1Gi"), 1024 ** 3);
  assert.equal(parseSizeBytes("64MiB"), 64 * 1024 ** 2);
  assert.equal(parseSizeBytes("100M"), 100e6);
  assert.equal(parseSizeBytes("4096"), 4096);
  for (const bad of ["", "12Qi", "Mi", "1.2.3M"]) assert.throws(() => parseSizeBytes(bad), { code: "E_INVALID" }, bad);
});

void test("formatDurationMs is readable", () => {
  assert.equal(formatDurationMs(12), "12ms");
  assert.equal(formatDurationMs(1234), "1.23s");
  assert.equal(formatDurationMs(75_000), "1m15s");
});

void test("backoff grows, is capped, and is jittered within [ceiling/2, ceiling]", () => {
  assert.equal(backoffMs(0, 100, 10_000, () => 0), 50);
  assert.equal(backoffMs(0, 100, 10_000, () => 1), 100);
  assert.equal(backoffMs(3, 100, 10_000, () => 1), 800);
  assert.equal(backoffMs(50, 100, 10_000, () => 1), 10_000);
});

void test("tokens are prefixed, 256-bit, matched by the masking pattern, hashed stably", () => {
  const t = newToken("lease");
  assert.match(t, /^dci_lse_[A-Za-z0-9_-]{43}$/);
  assert.notEqual(newToken("lease"), t);
  assert.deepEqual(`x ${t} y`.match(TOKEN_PATTERN), [t]);
  assert.equal(hashToken(t), hashToken(t));
  assert.match(hashToken(t), /^[a-f0-9]{64}$/);
});
