import assert from "node:assert/strict";
import { test } from "node:test";
import { runnerConfig } from "./runner-config.ts";

const base = { server: "http://127.0.0.1:1", registrationTokenFile: "/tmp/token" };

void test("insecure registries come from the flag, else the environment, and must be host[:port]", () => {
  assert.deepEqual(runnerConfig(base, {}).insecureRegistries, []);
  assert.deepEqual(runnerConfig(base, { DELTACI_INSECURE_REGISTRIES: "127.0.0.1:5000, registry.lan" }).insecureRegistries, ["127.0.0.1:5000", "registry.lan"]);
  assert.deepEqual(runnerConfig({ ...base, insecureRegistries: "a.example:443" }, { DELTACI_INSECURE_REGISTRIES: "b.example" }).insecureRegistries, ["a.example:443"]);
  assert.throws(() => runnerConfig({ ...base, insecureRegistries: "http://x" }, {}), /--insecure-registries: expected host\[:port\] entries, got "http:\/\/x"/);
});

void test("prewarming is on unless --no-prewarm or DELTACI_RUNNER_PREWARM=0", () => {
  assert.equal(runnerConfig(base, {}).prewarm, true);
  assert.equal(runnerConfig({ ...base, prewarm: false }, {}).prewarm, false);
  assert.equal(runnerConfig(base, { DELTACI_RUNNER_PREWARM: "0" }).prewarm, false);
});

void test("image roots come from --image-roots or DELTACI_IMAGE_ROOTS, else the sandbox default", () => {
  assert.equal(runnerConfig(base, {}).imageRoots, null);
  assert.deepEqual(runnerConfig(base, { DELTACI_IMAGE_ROOTS: "/srv/images, /opt/img" }).imageRoots, ["/srv/images", "/opt/img"]);
  assert.deepEqual(runnerConfig({ ...base, imageRoots: "/a" }, { DELTACI_IMAGE_ROOTS: "/b" }).imageRoots, ["/a"]);
});
