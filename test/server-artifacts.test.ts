/** Artifacts and sources: content-addressed, verified, resumable, deduplicated; a mismatch keeps nothing. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { completeBody, JumpClock, startTestServer, type TestServer } from "./server-harness.ts";

const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

async function casFiles(s: TestServer): Promise<string[]> {
  const root = join(s.dir, "cas", "sha256");
  const out: string[] = [];
  for (const d of await readdir(root)) out.push(...(await readdir(join(root, d))));
  return out;
}

function put(s: TestServer, url: string, token: string, body: Buffer, start: number, total: number) {
  return s.call("PUT", url, { token, body, headers: { "content-type": "application/octet-stream", "content-range": `bytes ${start}-${start + body.length - 1}/${total}` } });
}

void test("resumable upload, verify, download as an attachment, dedup", async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000 });
  try {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    const data = Buffer.from("<html><script>alert(1)</script></html>".repeat(100));
    const created = await s.call("POST", "/v1/runner/artifacts", { token: l.leaseToken, json: { name: "report.html", size: data.length, sha256: sha(data), mediaType: "text/html" } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const { artifactId, upload } = created.body;
    assert.equal(upload.method, "PUT");
    assert.equal(upload.url, `/v1/runner/artifacts/${artifactId}/content`);
    const first = await put(s, upload.url, l.leaseToken, data.subarray(0, 1000), 0, data.length);
    assert.equal(first.status, 202);
    assert.equal(first.body.committed, 1000);
    const head = await s.call("HEAD", upload.url, { token: l.leaseToken });
    assert.equal(head.headers["upload-offset"], "1000");
    const wrongStart = await put(s, upload.url, l.leaseToken, data.subarray(2000), 2000, data.length);
    assert.equal(wrongStart.status, 416);
    assert.equal(wrongStart.body.committed, 1000);
    assert.equal((await s.status(jobId)).artifacts.length, 0, "not visible before it is complete");
    const rest = await put(s, upload.url, l.leaseToken, data.subarray(1000), 1000, data.length);
    assert.equal(rest.status, 201, JSON.stringify(rest.body));
    assert.equal(rest.body.sha256, sha(data));
    assert.ok((await casFiles(s)).includes(sha(data)));
    // dedup: the same content needs no upload
    const again = await s.call("POST", "/v1/runner/artifacts", { token: l.leaseToken, json: { name: "copy.html", size: data.length, sha256: sha(data) } });
    assert.equal(again.body.upload, null);
    // immutable: the same name with other content is refused
    const clash = await s.call("POST", "/v1/runner/artifacts", { token: l.leaseToken, json: { name: "report.html", size: 3, sha256: sha("abc") } });
    assert.equal(clash.status, 409);
    assert.equal((await s.complete(l.leaseToken, completeBody({ artifacts: [artifactId, again.body.artifactId] }))).status, 200);
    const st = await s.status(jobId);
    assert.deepEqual(st.artifacts.map((a: { name: string }) => a.name), ["copy.html", "report.html"]);
    const dl = await s.api("GET", `/v1/jobs/${jobId}/artifacts/report.html`);
    assert.equal(dl.status, 200);
    assert.ok(dl.raw.equals(data));
    assert.match(String(dl.headers["content-disposition"]), /^attachment;/);
    assert.equal(dl.headers["x-content-type-options"], "nosniff");
    assert.equal(dl.headers["content-type"], "application/octet-stream");
    assert.equal((await s.api("GET", `/v1/jobs/${jobId}/artifacts/..%2F..%2Fstate.db`)).status, 400);
    assert.equal((await s.api("GET", `/v1/jobs/${jobId}/artifacts/nope.txt`)).status, 404);
  } finally {
    await s.close();
  }
});

void test("a digest or size mismatch is rejected and nothing is kept", async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000 });
  try {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    const claimed = Buffer.from("the real thing");
    const sent = Buffer.from("something else");
    const created = await s.call("POST", "/v1/runner/artifacts", { token: l.leaseToken, json: { name: "out.bin", size: claimed.length, sha256: sha(claimed) } });
    const r = await put(s, created.body.upload.url, l.leaseToken, sent, 0, claimed.length);
    assert.equal(r.status, 422);
    assert.equal(r.body.error.code, "E_DIGEST_MISMATCH");
    assert.deepEqual(await casFiles(s), []);
    assert.deepEqual(await readdir(join(s.dir, "uploads")), []);
    assert.equal((await s.status(jobId)).artifacts.length, 0);
    const sizeLie = await put(s, created.body.upload.url, l.leaseToken, Buffer.from("x"), 0, 1);
    assert.equal(sizeLie.status, 404, "the rejected artifact is gone");
    const empty = await s.call("POST", "/v1/runner/artifacts", { token: l.leaseToken, json: { name: "e", size: 0, sha256: sha("x") } });
    assert.equal(empty.status, 422);
    const bigger = await s.call("POST", "/v1/runner/artifacts", { token: l.leaseToken, json: { name: "b", size: 4, sha256: sha("abcd") } });
    const overlong = await put(s, bigger.body.upload.url, l.leaseToken, Buffer.from("abcde"), 0, 5);
    assert.equal(overlong.status, 400, "TOTAL must be the declared size");
  } finally {
    await s.close();
  }
});

void test("sources: upload once, jobs reference them by digest, the lease's runner downloads them", async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000, sourceMaxBytes: 64 * 1024 });
  try {
    const archive = Buffer.alloc(10_000, 7);
    const up = await s.call("POST", "/v1/sources", { token: s.srv.apiToken, body: archive, headers: { "content-type": "application/octet-stream" } });
    assert.equal(up.status, 201, JSON.stringify(up.body));
    assert.deepEqual(up.body, { sha256: sha(archive), size: archive.length });
    const tooBig = await s.call("POST", "/v1/sources", { token: s.srv.apiToken, body: Buffer.alloc(70_000), headers: { "content-type": "application/octet-stream" } });
    assert.equal(tooBig.status, 413);
    const missing = await s.api("POST", "/v1/jobs", { spec: (await import("./server-harness.ts")).jobSpec({ source: { kind: "archive", sha256: sha("nope") } }), fork: false });
    assert.equal(missing.status, 400);
    await s.submit({ source: { kind: "archive", sha256: sha(archive) } });
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    const got = await s.call("GET", "/v1/runner/source", { token: l.leaseToken });
    assert.equal(got.status, 200);
    assert.ok(got.raw.equals(archive));
    await s.submit();
    const l2 = await s.lease(await s.runner(), 1000);
    assert.ok(l2);
    assert.equal((await s.call("GET", "/v1/runner/source", { token: l2.leaseToken })).status, 404);
  } finally {
    await s.close();
  }
});

void test("an upload left unfinished when its attempt ends is removed", async () => {
  const clock = new JumpClock();
  const s = await startTestServer({ leaseTtlMs: 30_000, maxAttempts: 1, clock });
  try {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    const data = Buffer.from("half of it and the rest");
    const created = await s.call("POST", "/v1/runner/artifacts", { token: l.leaseToken, json: { name: "half.bin", size: data.length, sha256: sha(data) } });
    assert.equal((await put(s, created.body.upload.url, l.leaseToken, data.subarray(0, 5), 0, data.length)).status, 202);
    assert.equal((await readdir(join(s.dir, "uploads"))).length, 1);
    clock.advance(31_000);
    await s.waitFor(jobId, (st) => st.state === "errored");
    for (let i = 0; (await readdir(join(s.dir, "uploads"))).length > 0; i++) {
      assert.ok(i < 200, "the partial upload is removed");
      await new Promise((r) => setTimeout(r, 25));
    }
  } finally {
    await s.close();
  }
});

void test("a server closes while a client holds a download it stopped reading: the connection is cut after the grace", { timeout: 60_000 }, async () => {
  const s = await startTestServer({ leaseTtlMs: 30_000 });
  let closed = false;
  try {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    // Larger than the socket buffers on both sides, so the server is still writing when the client stops reading.
    const data = Buffer.alloc(32 * 1024 * 1024, 7);
    const created = await s.call("POST", "/v1/runner/artifacts", { token: l.leaseToken, json: { name: "big.bin", size: data.length, sha256: sha(data) } });
    assert.equal((await put(s, created.body.upload.url, l.leaseToken, data, 0, data.length)).status, 201);
    assert.equal((await s.complete(l.leaseToken, completeBody({ artifacts: [created.body.artifactId] }))).status, 200);
    const u = new URL(s.url);
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = httpRequest({ host: u.hostname, port: u.port, path: `/v1/jobs/${jobId}/artifacts/big.bin`, headers: { authorization: `Bearer ${s.srv.apiToken}` } }, (r) => {
        r.pause();
        resolve(r);
      });
      req.on("error", reject).end();
    });
    assert.equal(res.statusCode, 200);
    await s.close();
    closed = true;
    // Reading on now gets what was already in flight, then the cut: fewer bytes than Content-Length.
    let got = 0;
    res.on("data", (b: Buffer) => (got += b.length));
    await new Promise<void>((resolve) => res.once("close", () => resolve()).resume());
    assert.ok(got < data.length, `got ${got} of ${data.length} bytes`);
    assert.equal(res.complete, false, "the stalled download was cut, not finished");
  } finally {
    if (!closed) await s.close();
  }
});
