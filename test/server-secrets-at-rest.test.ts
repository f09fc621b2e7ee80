/**
 * Secrets at rest: sealed with AES-256-GCM under the key file; after real runs (in-process
 * runner, process sandbox) no secret value, raw or base64 in any alignment, is anywhere under
 * the data dir (state.db, its WAL, logs, blobs, key and token files); a terminal job's secrets
 * are deleted; a rotation re-seals; a missing or wrong key refuses the start with a clear error.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync, unlinkSync, writeFileSync, chmodSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import Database from "better-sqlite3";
import { systemClock } from "../src/base/clock.ts";
import { ProcessSandboxFactory } from "../src/sandbox/process/process-sandbox.ts";
import { startServer } from "../src/server/index.ts";
import { jobSpec, runInProcess, startHarness, type Harness } from "./support/runner-harness.ts";

const quiet = { info: () => {}, warn: () => {} };

/** The secret's raw bytes and its base64 in each of the three alignments (edges dropped). */
function forms(secret: string): string[] {
  const out = [secret];
  for (const prefix of ["", "a", "ab"]) {
    const b64 = Buffer.from(prefix + secret).toString("base64");
    out.push(b64.slice(Math.ceil((8 * prefix.length) / 6), Math.floor((8 * (prefix.length + secret.length)) / 6)));
  }
  return out;
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true }).map((f) => join(dir, String(f))).filter((f) => statSync(f).isFile());
}

function leaks(dataDir: string, secrets: string[]): string[] {
  const found: string[] = [];
  for (const file of filesUnder(dataDir)) {
    const bytes = readFileSync(file);
    for (const s of secrets) for (const f of forms(s)) if (bytes.includes(Buffer.from(f))) found.push(`${file}: ${f}`);
  }
  return found;
}

const storedSecrets = (dataDir: string) => {
  const db = new Database(join(dataDir, "state.db"), { readonly: true });
  try {
    return db.prepare("SELECT id, secrets FROM jobs").all() as Array<{ id: string; secrets: string }>;
  } finally {
    db.close();
  }
};

void test("after runs with secrets, no secret value (raw or base64) is anywhere under the data dir; terminal jobs' secrets are deleted", async (t) => {
  const h: Harness = await startHarness();
  t.after(() => h.close());
  const dataDir = h.server.dataDir;
  assert.equal(statSync(join(dataDir, "secrets-key")).mode & 0o777, 0o600, "the embedded default makes the key file 0600");
  const secrets = { API_TOKEN: `tok-${randomBytes(12).toString("hex")}`, DB_PASSWORD: `pw/${randomBytes(9).toString("base64")}+x` };
  const factory = new ProcessSandboxFactory({ clock: systemClock, logger: quiet });
  const script = 'echo "token=$API_TOKEN"; printf %s "$DB_PASSWORD" | base64; echo "done"';
  const ids: string[] = [];
  for (let i = 0; i < 2; i++) {
    const id = await h.api.submit(jobSpec({ steps: [{ name: "uses secrets", run: script }] }), secrets);
    ids.push(id);
    const exit = await runInProcess(h, factory);
    assert.equal(exit.reason, "reported", JSON.stringify(exit));
    const job = await h.api.waitDone(id);
    assert.equal(job.state, "succeeded", JSON.stringify(job.failure));
    assert.match((await h.api.log(id)).toString(), /token=\*\*\*/);
  }
  // A job still queued holds its secrets, sealed.
  const queued = await h.api.submit(jobSpec({ steps: [{ name: "later", run: "true" }] }), secrets);
  const rows = storedSecrets(dataDir);
  assert.deepEqual(rows.filter((r) => ids.includes(r.id)).map((r) => r.secrets), ["{}", "{}"], "terminal jobs keep no secrets");
  assert.match(rows.find((r) => r.id === queued)?.secrets ?? "", /^sealed:v1:[0-9a-f]{16}:/);
  assert.deepEqual(leaks(dataDir, Object.values(secrets)), [], "while the server runs (WAL included)");
  await h.server.close();
  assert.deepEqual(leaks(dataDir, Object.values(secrets)), [], "after it stopped");
  // Reopened with the same key, the queued job's runner still gets the real values.
  h.server = await startServer({ dataDir, host: "127.0.0.1", port: 0, durability: "normal" });
  const srv = h.server;
  const { tokens } = (await (await fetch(`${srv.url}/v1/controller/registrations`, { method: "POST", headers: { authorization: `Bearer ${srv.controllerToken}`, "content-type": "application/json" }, body: JSON.stringify({ count: 1, labels: [] }) })).json()) as { tokens: string[] };
  const reg = (await (await fetch(`${srv.url}/v1/runner/register`, { method: "POST", headers: { authorization: `Bearer ${tokens[0]}`, "content-type": "application/json" }, body: JSON.stringify({ name: "t", version: "1", capabilities: { os: "linux", arch: "x64", labels: [], toolchains: {}, resources: { cpus: 1, memoryMiB: 1024, diskMiB: 1024 }, isolation: ["process"] } }) })).json()) as { sessionToken: string };
  const lease = (await (await fetch(`${srv.url}/v1/runner/lease`, { method: "POST", headers: { authorization: `Bearer ${reg.sessionToken}`, "content-type": "application/json" }, body: JSON.stringify({ waitMs: 0 }) })).json()) as { lease: { jobId: string; job: { secrets: Record<string, string> } } };
  assert.equal(lease.lease.jobId, queued);
  assert.deepEqual(lease.lease.job.secrets, secrets);
});

void test("rotation re-seals with the new key; a missing or wrong key refuses the start and says so", async (t) => {
  const h: Harness = await startHarness();
  t.after(() => h.close());
  const dataDir = h.server.dataDir;
  const keyFile = join(dataDir, "secrets-key");
  const jobId = await h.api.submit(jobSpec({ steps: [{ name: "s", run: "true" }] }), { TOKEN: "rotate-me-secret-value" });
  await h.server.close();
  const kid = (id: string) => storedSecrets(dataDir).find((r) => r.id === id)?.secrets.split(":")[2];
  const before = kid(jobId);
  const originalKey = readFileSync(keyFile);

  h.server = await startServer({ dataDir, host: "127.0.0.1", port: 0, rotateSecretsKey: true });
  await h.server.close();
  const lines = readFileSync(keyFile, "utf8").split("\n").filter((l) => l && !l.startsWith("#"));
  assert.equal(lines.length, 2, "the new key first, the old one kept");
  assert.notEqual(kid(jobId), before, "re-sealed with the new key");
  assert.equal(statSync(keyFile).mode & 0o777, 0o600);

  // Missing (the embedded default never makes a new key over sealed state).
  const rotated = readFileSync(keyFile);
  unlinkSync(keyFile);
  await assert.rejects(startServer({ dataDir, host: "127.0.0.1", port: 0 }), /secrets key file .* is missing: restore it/);
  assert.throws(() => statSync(keyFile), "no key was made in its place");
  // Wrong: the original file without the new key, or a key of another server.
  writeFileSync(keyFile, originalKey, { mode: 0o600 });
  await assert.rejects(startServer({ dataDir, host: "127.0.0.1", port: 0 }), /wrong secrets key: the state's secrets were sealed with key [0-9a-f]{16}, which .* does not hold/);
  writeFileSync(keyFile, `${randomBytes(32).toString("base64")}\n`, { mode: 0o600 });
  await assert.rejects(startServer({ dataDir, host: "127.0.0.1", port: 0 }), /wrong secrets key/);
  // Given explicitly but absent; readable by others.
  await assert.rejects(startServer({ dataDir, host: "127.0.0.1", port: 0, secretsKeyFile: join(dataDir, "nope") }), /secrets key file .*nope does not exist/);
  writeFileSync(keyFile, rotated);
  chmodSync(keyFile, 0o644);
  await assert.rejects(startServer({ dataDir, host: "127.0.0.1", port: 0 }), /is readable by others/);
  chmodSync(keyFile, 0o600);
  // The right key file, outside the data dir too.
  const outside = join(h.root, "key-elsewhere");
  writeFileSync(outside, rotated, { mode: 0o600 });
  unlinkSync(keyFile);
  h.server = await startServer({ dataDir, host: "127.0.0.1", port: 0, secretsKeyFile: outside });
});
