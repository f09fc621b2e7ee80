/** A server killed with SIGKILL and started again loses nothing it acknowledged. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import { capabilities, completeBody, jobSpec, type Json } from "./server-harness.ts";
import { waitForReadyUrl } from "./support/ready-url.ts";

const ROOT = join(import.meta.dirname, "..");
const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

interface Child {
  proc: ChildProcess;
  url: string;
}

async function spawnServer(dataDir: string): Promise<Child> {
  const proc = spawn(process.execPath, [join(ROOT, "bin", "deltaci.js"), "server", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--lease-ttl", "30s", "--log-level", "warn"], {
    cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, DELTACI_API_TOKEN: "", DELTACI_CONTROLLER_TOKEN: "" },
  });
  const url = await waitForReadyUrl(proc);
  return { proc, url };
}

async function kill9(c: Child): Promise<void> {
  if (c.proc.exitCode !== null || c.proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => c.proc.once("exit", () => r()));
  c.proc.kill("SIGKILL");
  await exited;
}

async function call(url: string, method: string, path: string, token: string, opts: { json?: unknown; body?: Buffer; headers?: Record<string, string> } = {}): Promise<{ status: number; body: Json; raw: Buffer }> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}`, ...opts.headers };
  let body: string | Buffer | null = opts.body ?? null;
  if (opts.json !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(opts.json);
  }
  const res = await request(url + path, { method: method as "GET", headers, body });
  const raw = Buffer.from(await res.body.arrayBuffer());
  const isJson = String(res.headers["content-type"] ?? "").includes("json") && raw.length > 0;
  return { status: res.statusCode, body: isJson ? JSON.parse(raw.toString()) : raw, raw };
}

void test("restart after SIGKILL keeps jobs, attempts, transitions, log bytes, artifacts and tokens", async () => {
  const dir = await mkdtemp(join(tmpdir(), "deltaci-durability-"));
  let child: Child | null = null;
  try {
    child = await spawnServer(dir);
    const api = (await readFile(join(dir, "api-token"), "utf8")).trim();
    const ctl = (await readFile(join(dir, "controller-token"), "utf8")).trim();
    const u = child.url;
    const done = (await call(u, "POST", "/v1/jobs", api, { json: { spec: jobSpec({ name: "done" }), fork: false } })).body.jobId as string;
    const live = (await call(u, "POST", "/v1/jobs", api, { json: { spec: jobSpec({ name: "live" }), fork: false, secrets: { K: "v" } } })).body.jobId as string;
    const queued = (await call(u, "POST", "/v1/jobs", api, { json: { spec: jobSpec({ name: "queued", runsOn: { labels: ["nobody"] } }), fork: false } })).body.jobId as string;
    const leaseOne = async () => {
      const reg = (await call(u, "POST", "/v1/controller/registrations", ctl, { json: { count: 1, labels: [] } })).body.tokens[0] as string;
      const sess = (await call(u, "POST", "/v1/runner/register", reg, { json: { name: "r", version: "1", capabilities: capabilities() } })).body.sessionToken as string;
      return (await call(u, "POST", "/v1/runner/lease", sess, { json: { waitMs: 1000 } })).body.lease;
    };
    const l1 = await leaseOne();
    const l2 = await leaseOne();
    const byJob = new Map([[l1.jobId, l1], [l2.jobId, l2]]);
    const d = byJob.get(done);
    const r = byJob.get(live);
    assert.ok(d && r);
    const art = Buffer.from("artifact bytes");
    const created = await call(u, "POST", "/v1/runner/artifacts", d.leaseToken, { json: { name: "out.txt", size: art.length, sha256: sha(art) } });
    assert.equal((await call(u, "PUT", created.body.upload.url, d.leaseToken, { body: art, headers: { "content-type": "application/octet-stream", "content-range": `bytes 0-${art.length - 1}/${art.length}` } })).status, 201);
    const logText = "acknowledged line\n";
    assert.equal((await call(u, "PUT", "/v1/runner/log", d.leaseToken, { body: Buffer.from(logText), headers: { "content-type": "application/octet-stream", "content-range": `bytes 0-${logText.length - 1}/*` } })).status, 202);
    assert.equal((await call(u, "POST", "/v1/runner/complete", d.leaseToken, { json: completeBody({ artifacts: [created.body.artifactId], log: { bytes: logText.length, sha256: sha(logText) } }) })).status, 200);
    assert.equal((await call(u, "PUT", "/v1/runner/log", r.leaseToken, { body: Buffer.from("running\n"), headers: { "content-type": "application/octet-stream", "content-range": "bytes 0-7/*" } })).status, 202);
    const before = await Promise.all([done, live, queued].map(async (id) => (await call(u, "GET", `/v1/jobs/${id}`, api)).body));

    await kill9(child);
    child = await spawnServer(dir);
    const v = child.url;
    const after = await Promise.all([done, live, queued].map(async (id) => (await call(v, "GET", `/v1/jobs/${id}`, api)).body));
    assert.deepEqual(after, before);
    assert.equal(after[0].state, "succeeded");
    assert.equal((await call(v, "GET", `/v1/jobs/${done}/log`, api)).raw.toString(), logText);
    assert.ok((await call(v, "GET", `/v1/jobs/${done}/artifacts/out.txt`, api)).raw.equals(art));
    // the live attempt's runner carries on against the restarted server
    assert.equal((await call(v, "POST", "/v1/runner/heartbeat", r.leaseToken, { json: { state: "running", step: 0, logBytes: 8 } })).status, 200);
    const more = await call(v, "PUT", "/v1/runner/log", r.leaseToken, { body: Buffer.from("running\nmore\n"), headers: { "content-type": "application/octet-stream", "content-range": "bytes 0-12/*" } });
    assert.equal(more.body.committed, 13);
    assert.equal((await call(v, "POST", "/v1/runner/complete", r.leaseToken, { json: completeBody({ log: { bytes: 13, sha256: sha("running\nmore\n") } }) })).status, 200);
    assert.equal((await call(v, "GET", `/v1/jobs/${live}`, api)).body.state, "succeeded");
  } finally {
    if (child) await kill9(child);
    await rm(dir, { recursive: true, force: true });
  }
});

void test("SIGTERM shuts down cleanly: held long polls are answered", async () => {
  const dir = await mkdtemp(join(tmpdir(), "deltaci-sigterm-"));
  let child: Child | null = null;
  try {
    child = await spawnServer(dir);
    const ctl = (await readFile(join(dir, "controller-token"), "utf8")).trim();
    const reg = (await call(child.url, "POST", "/v1/controller/registrations", ctl, { json: { count: 1, labels: [] } })).body.tokens[0] as string;
    const sess = (await call(child.url, "POST", "/v1/runner/register", reg, { json: { name: "r", version: "1", capabilities: capabilities() } })).body.sessionToken as string;
    const api = (await readFile(join(dir, "api-token"), "utf8")).trim();
    const jobId = (await call(child.url, "POST", "/v1/jobs", api, { json: { spec: jobSpec({ runsOn: { labels: ["elsewhere"] } }), fork: false } })).body.jobId as string;
    const follow = call(child.url, "GET", `/v1/jobs/${jobId}/log?follow=1`, api);
    const held = call(child.url, "POST", "/v1/runner/lease", sess, { json: { waitMs: 60_000 } });
    const demand = call(child.url, "GET", "/v1/controller/demand?since=0&waitMs=60000", ctl);
    assert.equal((await demand).status, 200, "answered at once: since differs");
    // wait until the server holds the lease request (metrics), not for a fixed time
    for (;;) {
      const m = await call(child.url, "GET", "/metrics", "");
      if (/deltaci_lease_waiters 1/.test(m.raw.toString())) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const exited = new Promise<number | null>((r) => child?.proc.once("exit", (code) => r(code)));
    child.proc.kill("SIGTERM");
    const res = await held;
    assert.equal(res.status, 204);
    assert.equal((await follow).status, 200, "an open follow stream ends");
    assert.equal(await exited, 0);
  } finally {
    if (child) await kill9(child);
    await rm(dir, { recursive: true, force: true });
  }
});
