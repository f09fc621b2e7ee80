import assert from "node:assert/strict";
import { test } from "node:test";
import { registryRefOf } from "./registry-pull.ts";

void test("registry references are normalized Docker-style; local layouts and archives are not registry refs", () => {
  assert.deepEqual(registryRefOf("debian"), { host: "docker.io", repository: "library/debian" });
  assert.deepEqual(registryRefOf("debian:bookworm"), { host: "docker.io", repository: "library/debian" });
  assert.deepEqual(registryRefOf("docker://team/img"), { host: "docker.io", repository: "team/img" });
  assert.deepEqual(registryRefOf("registry.example.org:5000/team/img"), { host: "registry.example.org:5000", repository: "team/img" });
  assert.deepEqual(registryRefOf("127.0.0.1:5000/debian:bookworm"), { host: "127.0.0.1:5000", repository: "debian" });
  assert.deepEqual(registryRefOf("localhost/a/b/c"), { host: "localhost", repository: "a/b/c" });
  assert.equal(registryRefOf("oci:/var/cache/deltaci/images/debian:bookworm"), null);
  assert.equal(registryRefOf("oci-archive:/tmp/x.tar"), null);
  assert.equal(registryRefOf("/tmp"), null, "an existing path is a layout dir");
  assert.equal(registryRefOf("./layout"), null);
  assert.throws(() => registryRefOf("Bad Name"), (e: Error & { code?: string }) => e.code === "E_SANDBOX" && /not a registry reference/.test(e.message));
});
