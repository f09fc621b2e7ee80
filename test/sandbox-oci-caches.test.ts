/** Cache volumes: named per (scope, key), mounted at declared paths, read-only when asked. */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { runStep } from "../src/sandbox/conformance.ts";
import type { Cache } from "../src/protocol/schemas.ts";
import { ociTestEnv } from "./support/sandbox-harness.ts";

const env = ociTestEnv();

async function job(caches: Cache[], script: string, secretValues: string[] = []) {
  const spec = env.spec({ caches, secretValues });
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

  void it("saves a writable cache after the job, unless it contains a secret's value", async () => {
    const caches: Cache[] = [{ key: "k", path: "c", scope: "repo-s", readOnly: false }];
    const secret = "s3cr3t-token-value";
    const first = await job(caches, "echo kept > c/a; echo gone > c/b; mkdir -p c/d/e; echo deep > c/d/e/f", [secret]);
    assert.equal(first.code, 0, first.err);
    const during = await job(caches, "cat c/a c/d/e/f; rm c/b; echo changed > c/a", [secret]);
    assert.equal(during.out, "kept\ndeep\n");
    const after1 = await job(caches, "ls c; cat c/a");
    assert.equal(after1.out, "a\nd\nchanged\n", "changes and deletions are merged back");
    const leaky = await job(caches, `echo "${secret}" > c/leak; echo "$(printf %s ${secret} | base64)" > c/leak64; echo more > c/a`, [secret]);
    assert.equal(leaky.code, 0, leaky.err);
    const after2 = await job(caches, "ls c; cat c/a");
    assert.equal(after2.out, "a\nd\nchanged\n", "a cache holding a secret is not saved at all");
    const encoded = await job(caches, `printf %s ${secret} | base64 > c/only64`, [secret]);
    assert.equal(encoded.code, 0);
    assert.equal((await job(caches, "ls c")).out, "a\nd\n", "base64 of a secret counts too");
  });

  void it("refuses cache paths over system directories", async () => {
    const spec = env.spec({ caches: [{ key: "k", path: "/usr/lib", scope: "s", readOnly: false }] });
    await assert.rejects(env.factory.create(spec));
    assert.deepEqual(await env.leftovers(spec), []);
  });
});
