/**
 * The server on an S3 blob store (a real S3 server from scripts/test-services.sh): artifacts and
 * sources go straight to the bucket through presigned URLs, multipart ones resume, the server
 * verifies size and sha256 before anything becomes visible, downloads stream through the server.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { uploadArtifacts } from "../src/artifacts/upload-artifacts.ts";
import { systemClock } from "../src/base/clock.ts";
import { HttpClient } from "../src/client/http.ts";
import { JobApiClient } from "../src/client/job-api-client.ts";
import { RetryPolicy } from "../src/client/retry-policy.ts";
import { RunnerClient } from "../src/client/runner-client.ts";
import { testS3Env } from "../src/config/server-config.ts";
import { completeBody, startTestServer, type TestServer } from "./server-harness.ts";

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** A server on the test bucket under a fresh prefix; 5 MiB parts from 5 MiB up keep multipart cheap. */
async function s3Server(): Promise<TestServer> {
  const env = testS3Env();
  return startTestServer({
    blobStore: {
      kind: "s3", bucket: env.bucket, prefix: `server-test-${randomBytes(6).toString("hex")}/`, endpoint: env.endpoint, region: env.region,
      forcePathStyle: true, credentials: env.credentials, partSizeBytes: 5 * MiB, multipartThresholdBytes: 5 * MiB,
    },
  });
}

/** fetch sets Content-Length itself for a buffer (and refuses a second one). */
async function putUrl(url: string, body: Buffer, headers: Record<string, string> = {}): Promise<Response> {
  const rest = Object.fromEntries(Object.entries(headers).filter(([k]) => k.toLowerCase() !== "content-length"));
  return fetch(url, { method: "PUT", body, headers: rest });
}

async function leased(s: TestServer): Promise<{ jobId: string; token: string }> {
  const jobId = await s.submit();
  const l = await s.lease(await s.runner(), 1000);
  assert.ok(l);
  return { jobId, token: l.leaseToken };
}

void test("s3: a small artifact is one presigned PUT, committed after verification, downloaded byte-exact, deduplicated", async () => {
  const s = await s3Server();
  try {
    const { jobId, token } = await leased(s);
    const data = randomBytes(123_457);
    const created = await s.call("POST", "/v1/runner/artifacts", { token, json: { name: "small.bin", size: data.length, sha256: sha(data) } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const { artifactId, upload } = created.body;
    assert.match(upload.url, /^http:\/\/127\.0\.0\.1:\d+\//, "a presigned object-store URL");
    assert.equal(upload.commitUrl, `/v1/runner/artifacts/${artifactId}/commit`);
    assert.equal(upload.parts, undefined);
    const put = await putUrl(upload.url, data, upload.headers);
    assert.equal(put.status, 200, await put.text());
    assert.equal((await s.status(jobId)).artifacts.length, 0, "not visible before the commit");
    const commit = await s.call("POST", upload.commitUrl, { token });
    assert.equal(commit.status, 201, JSON.stringify(commit.body));
    assert.equal(commit.body.sha256, sha(data));
    const again = await s.call("POST", "/v1/runner/artifacts", { token, json: { name: "copy.bin", size: data.length, sha256: sha(data) } });
    assert.equal(again.body.upload, null, "the store holds it: no upload");
    assert.equal((await s.complete(token, completeBody({ artifacts: [artifactId, again.body.artifactId] }))).status, 200);
    const dl = await s.api("GET", `/v1/jobs/${jobId}/artifacts/small.bin`);
    assert.equal(dl.status, 200);
    assert.ok(dl.raw.equals(data));
    assert.equal(dl.headers["x-deltaci-sha256"], sha(data));
    assert.equal(dl.headers["x-content-type-options"], "nosniff");
  } finally {
    await s.close();
  }
});

void test("s3: a multipart artifact resumes from the parts the bucket holds (a fresh client, same lease)", async () => {
  const s = await s3Server();
  try {
    const { jobId, token } = await leased(s);
    const data = randomBytes(12 * MiB + 321);
    const body = { name: "big.bin", size: data.length, sha256: sha(data) };
    const first = (await s.call("POST", "/v1/runner/artifacts", { token, json: body })).body;
    assert.deepEqual(first.upload.parts.map((p: { partNumber: number }) => p.partNumber), [1, 2, 3]);
    const [p1, p2] = first.upload.parts;
    for (const p of [p1, p2]) assert.equal((await putUrl(p.url, data.subarray(p.offset, p.offset + p.size))).status, 200);
    // The uploader dies here. Whoever holds the lease asks again and gets only what is missing.
    const second = (await s.call("POST", "/v1/runner/artifacts", { token, json: body })).body;
    assert.equal(second.artifactId, first.artifactId);
    assert.deepEqual(second.upload.parts.map((p: { partNumber: number }) => p.partNumber), [3]);
    const file = join(await mkdtemp(join(tmpdir(), "deltaci-s3-test-")), "big.bin");
    await writeFile(file, data);
    const http = new HttpClient(s.url, { timeoutMs: 30_000 });
    const client = new RunnerClient({ http, retry: new RetryPolicy({ clock: systemClock }), requestTimeoutMs: 30_000 });
    try {
      await client.uploadArtifact(token, second.upload, file, data.length, { maxAttempts: 3 });
    } finally {
      await client.close();
      await rm(join(file, ".."), { recursive: true, force: true });
    }
    assert.equal((await s.complete(token, completeBody({ artifacts: [first.artifactId] }))).status, 200);
    const dl = await s.api("GET", `/v1/jobs/${jobId}/artifacts/big.bin`);
    assert.ok(dl.raw.equals(data), "byte-exact");
  } finally {
    await s.close();
  }
});

void test("s3: tampered and short uploads are refused (422), nothing becomes visible, and the name can be created again", async () => {
  const s = await s3Server();
  try {
    const { jobId, token } = await leased(s);
    const data = randomBytes(70_000);
    const body = { name: "t.bin", size: data.length, sha256: sha(data) };
    const evil = Buffer.from(data);
    evil[100] = (evil[100] ?? 0) ^ 1;
    for (const bytes of [evil, data.subarray(0, data.length - 1)]) {
      const { upload } = (await s.call("POST", "/v1/runner/artifacts", { token, json: body })).body;
      assert.equal((await putUrl(upload.url, bytes)).status, 200);
      const commit = await s.call("POST", upload.commitUrl, { token });
      assert.equal(commit.status, 422, JSON.stringify(commit.body));
      assert.equal(commit.body.error.code, "E_DIGEST_MISMATCH");
      assert.equal((await s.status(jobId)).artifacts.length, 0);
      assert.equal((await s.call("POST", upload.commitUrl, { token })).status, 404, "the record went with the bytes");
    }
    // A multipart upload that lacks a part is refused as well.
    const big = randomBytes(6 * MiB);
    const plan = (await s.call("POST", "/v1/runner/artifacts", { token, json: { name: "m.bin", size: big.length, sha256: sha(big) } })).body;
    const p1 = plan.upload.parts[0];
    assert.equal((await putUrl(p1.url, big.subarray(0, p1.size))).status, 200);
    assert.equal((await s.call("POST", plan.upload.commitUrl, { token })).status, 422);
    // Another stale token cannot commit someone else's artifact.
    const other = await leased(s);
    const ok = (await s.call("POST", "/v1/runner/artifacts", { token, json: body })).body;
    assert.equal((await putUrl(ok.upload.url, data)).status, 200);
    assert.equal((await s.call("POST", ok.upload.commitUrl, { token: other.token })).status, 404);
    assert.equal((await s.call("POST", ok.upload.commitUrl, { token })).status, 201);
  } finally {
    await s.close();
  }
});

void test("s3: a source archive goes straight to the bucket, is deduplicated, and reaches the runner byte-exact", async () => {
  const s = await s3Server();
  const api = new JobApiClient({ server: s.url, token: s.srv.apiToken, timeoutMs: 30_000 });
  try {
    const tar = randomBytes(7 * MiB + 5);
    const declared = await s.api("POST", "/v1/sources/uploads", { sha256: sha(tar), size: tar.length });
    assert.equal(declared.status, 201);
    assert.ok(declared.body.upload.parts.length >= 2, "multipart above the threshold");
    assert.deepEqual(await api.uploadSource(tar), { sha256: sha(tar) });
    const again = await s.api("POST", "/v1/sources/uploads", { sha256: sha(tar), size: tar.length });
    assert.equal(again.body.upload, null);
    const jobId = await s.submit({ source: { kind: "archive", sha256: sha(tar) } });
    const l = await s.lease(await s.runner(), 1000);
    assert.ok(l);
    const got = await s.call("GET", "/v1/runner/source", { token: l.leaseToken });
    assert.equal(got.status, 200);
    assert.ok(got.raw.equals(tar));
    assert.ok(jobId);
    // The through-the-server route still works on an S3 store.
    const small = randomBytes(1000);
    const posted = await s.call("POST", "/v1/sources", { token: s.srv.apiToken, body: small, headers: { "content-type": "application/octet-stream" } });
    assert.deepEqual(posted.body, { sha256: sha(small), size: small.length });
  } finally {
    await api.close();
    await s.close();
  }
});

void test("s3: the runner's uploader survives a refused part: it asks again and sends only the missing part", async () => {
  const s = await s3Server();
  const dir = await mkdtemp(join(tmpdir(), "deltaci-s3-test-"));
  const http = new HttpClient(s.url, { timeoutMs: 30_000 });
  const client = new RunnerClient({ http, retry: new RetryPolicy({ clock: systemClock, baseMs: 10, maxMs: 50 }), requestTimeoutMs: 30_000 });
  try {
    const { jobId, token } = await leased(s);
    const data = randomBytes(7 * MiB + 11);
    await mkdir(join(dir, "ws", "out"), { recursive: true });
    await mkdir(join(dir, "staging"));
    await writeFile(join(dir, "ws", "out", "big.bin"), data);
    const plans: number[][] = [];
    const outcomes = await uploadArtifacts({
      workspace: join(dir, "ws"), stagingDir: join(dir, "staging"), rules: [{ name: "big.bin", paths: ["out/big.bin"], when: "on_success" }], signal: new AbortController().signal,
      sink: {
        create: async (body, signal) => {
          const created = await client.createArtifact(token, body, { signal });
          plans.push(created.upload?.parts?.map((p) => p.partNumber) ?? []);
          const part2 = created.upload?.parts?.find((p) => p.partNumber === 2);
          // The first answer's part 2 URL carries a broken signature: the store refuses it (403), as an expired URL.
          if (plans.length === 1 && part2) part2.url = part2.url.replace(/X-Amz-Signature=[0-9a-f]/, "X-Amz-Signature=x");
          return created;
        },
        upload: (target, file, size, signal) => client.uploadArtifact(token, target, file, size, { signal, maxAttempts: 2 }),
      },
    });
    const [o] = outcomes;
    assert.ok(o);
    assert.equal(o.error, null, o.notes.join("\n"));
    assert.deepEqual(plans, [[1, 2], [2]]);
    assert.match(o.notes.join("\n"), /asking for fresh upload URLs/);
    assert.equal((await s.complete(token, completeBody({ artifacts: [o.artifactId] }))).status, 200);
    assert.ok((await s.api("GET", `/v1/jobs/${jobId}/artifacts/big.bin`)).raw.equals(data));
  } finally {
    await client.close();
    await rm(dir, { recursive: true, force: true });
    await s.close();
  }
});
