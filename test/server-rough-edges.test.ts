/**
 * Rough edges a new user hit (issue 13): an empty JSON body is `{}`, an artifact PUT without
 * Content-Range is the complete upload, and a single-file artifact keeps its relative path.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { completeBody, startTestServer } from "./server-harness.ts";

const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

void test("POST cancel with Content-Type: application/json and an empty (or blank) body cancels gracefully", async () => {
  const s = await startTestServer();
  try {
    for (const body of ["", "  \n"]) {
      const jobId = await s.submit();
      const r = await s.call("POST", `/v1/jobs/${jobId}/cancel`, { token: s.srv.apiToken, body, headers: { "content-type": "application/json" } });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.state, "canceled");
    }
    // A required body left empty is still a 400 that names what is missing, never a framework error.
    const submit = await s.call("POST", "/v1/jobs", { token: s.srv.apiToken, body: "", headers: { "content-type": "application/json" } });
    assert.equal(submit.status, 400);
    assert.equal(submit.body.error.code, "E_INVALID");
    assert.match(submit.body.error.message, /spec/);
    const bad = await s.call("POST", "/v1/jobs", { token: s.srv.apiToken, body: "{", headers: { "content-type": "application/json" } });
    assert.equal(bad.status, 400);
  } finally {
    await s.close();
  }
});

void test("an artifact PUT of the whole body without Content-Range completes the upload (the descriptor's headers suffice)", async () => {
  const s = await startTestServer();
  try {
    const jobId = await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    const data = Buffer.from("plain text, twice as long as it looks\n".repeat(50));
    const created = await s.call("POST", "/v1/runner/artifacts", { token: l.leaseToken, json: { name: "plain", size: data.length, sha256: sha(data), path: "out/plain.txt" } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const { upload, artifactId } = created.body;
    assert.equal(upload.headers["content-length"], String(data.length));
    // A half-sent earlier try leaves bytes behind: the whole-body PUT starts over.
    const partial = await s.call("PUT", upload.url, { token: l.leaseToken, body: data.subarray(0, 100), headers: { "content-type": "application/octet-stream", "content-range": `bytes 0-99/${data.length}` } });
    assert.equal(partial.status, 202);
    const short = await s.call("PUT", upload.url, { token: l.leaseToken, body: data.subarray(0, 10), headers: { "content-type": "application/octet-stream" } });
    assert.equal(short.status, 400, "a Content-Length other than the declared size is refused");
    const put = await s.call("PUT", upload.url, { token: l.leaseToken, body: data, headers: upload.headers });
    assert.equal(put.status, 201, JSON.stringify(put.body));
    assert.equal(put.body.sha256, sha(data));
    assert.equal((await s.complete(l.leaseToken, completeBody({ artifacts: [artifactId] }))).status, 200);
    const st = await s.status(jobId);
    assert.deepEqual(st.artifacts.map((a: { name: string; path: string }) => [a.name, a.path]), [["plain", "out/plain.txt"]]);
    const dl = await s.api("GET", `/v1/jobs/${jobId}/artifacts/plain`);
    assert.ok(dl.raw.equals(data));
    assert.match(String(dl.headers["content-disposition"]), /^attachment; filename="plain.txt"; filename\*=UTF-8''plain.txt$/);
  } finally {
    await s.close();
  }
});

void test("an artifact path that could leave its directory is refused", async () => {
  const s = await startTestServer();
  try {
    await s.submit();
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    for (const path of ["../x", "/etc/passwd", "a//b", "a/./b", "a/..", "a\\b", "a\u0000b", ""]) {
      const r = await s.call("POST", "/v1/runner/artifacts", { token: l.leaseToken, json: { name: "x", size: 1, sha256: sha("x"), path } });
      assert.equal(r.status, 400, `${JSON.stringify(path)}: ${JSON.stringify(r.body)}`);
    }
    const ok = await s.call("POST", "/v1/runner/artifacts", { token: l.leaseToken, json: { name: "x", size: 1, sha256: sha("x"), path: "dir/sub dir/ünï.txt" } });
    assert.equal(ok.status, 201, JSON.stringify(ok.body));
  } finally {
    await s.close();
  }
});
