/** Cache volumes: named per (scope, key), mounted at declared paths, read-only when asked. */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { runStep } from "../src/sandbox/conformance.ts";
import type { Cache } from "../src/protocol/schemas.ts";
import { ociTestEnv } from "./support/sandbox-harness.ts";

const env = ociTestEnv();

async function job(caches: Cache[], script: string) {
  const spec = env.spec({ caches });
  const sb = await env.factory.create(spec);
  try {
    const r = await runStep(sb, script);
    return { out: r.stdout.toString(), err: r.stderr.toString(), code: r.result.exitCode };
  } finally {
    await sb.dispose();
    assert.deepEqual(await env.leftovers(spec), []);
  }
}

void describe("oci caches", { timeout: 300_000 }, () => {
  after(async () => {
    await env.cleanup();
  });

  void it("shares a cache between jobs of the same scope and key, across slots", async () => {
    const caches: Cache[] = [
      { key: "deps", path: "/home/deltaci/.cache/deps", scope: "repo-a", readOnly: false },
      { key: "tools", path: "/opt/tools", scope: "repo-a", readOnly: false },
    ];
    const first = await job(caches, "echo v1 > ~/.cache/deps/lock; echo t > /opt/tools/t; echo done");
    assert.equal(first.out, "done\n", first.err);
    const second = await job(caches, "cat ~/.cache/deps/lock /opt/tools/t");
    assert.equal(second.out, "v1\nt\n", second.err);
  });

  void it("keeps scopes apart and honors readOnly", async () => {
    const other = await job([{ key: "deps", path: "cache", scope: "repo-b", readOnly: false }], "ls -A cache | wc -l");
    assert.equal(other.out.trim(), "0");
    const ro = await job([{ key: "deps", path: "/home/deltaci/.cache/deps", scope: "repo-a", readOnly: true }], "cat ~/.cache/deps/lock; echo x > ~/.cache/deps/lock 2>/dev/null && echo wrote || echo read-only");
    assert.equal(ro.out, "v1\nread-only\n");
  });

  void it("refuses cache paths over system directories", async () => {
    const spec = env.spec({ caches: [{ key: "k", path: "/usr/lib", scope: "s", readOnly: false }] });
    await assert.rejects(env.factory.create(spec));
    assert.deepEqual(await env.leftovers(spec), []);
  });
});
