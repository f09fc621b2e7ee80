/** Malformed, oversized and wrongly-authorised requests on every endpoint (table-driven). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { capabilities, completeBody, jobSpec, startTestServer } from "./server-harness.ts";

type Kind = "registration" | "session" | "lease" | "controller" | "api";
interface Endpoint {
  method: string;
  path: string;
  auth: Kind;
  /** A valid JSON body (JSON endpoints only). */
  json?: Record<string, unknown>;
  /** Raw body endpoints. */
  octet?: { headers: Record<string, string> };
}

void test("every endpoint rejects bad auth, malformed and oversized bodies with stable codes", async () => {
  const s = await startTestServer({ leaseTtlMs: 60_000, jsonBodyLimitBytes: 64 * 1024 });
  try {
    const jobId = await s.submit();
    const session = await s.runner();
    const lease = await s.lease(session, 1000);
    assert.ok(lease);
    const spareSession = await s.runner();
    const reg = (await s.ctl("POST", "/v1/controller/registrations", { count: 1, labels: [] })).body.tokens[0] as string;
    const art = await s.call("POST", "/v1/runner/artifacts", { token: lease.leaseToken, json: { name: "a", size: 3, sha256: "a".repeat(64) } });
    const artUrl = art.body.upload.url as string;
    const tokens: Record<Kind, string> = { registration: reg, session: spareSession, lease: lease.leaseToken, controller: s.srv.controllerToken, api: s.srv.apiToken };

    const endpoints: Endpoint[] = [
      { method: "POST", path: "/v1/runner/register", auth: "registration", json: { name: "r", version: "1", capabilities: capabilities() } },
      { method: "POST", path: "/v1/runner/lease", auth: "session", json: { waitMs: 0 } },
      { method: "POST", path: "/v1/runner/heartbeat", auth: "lease", json: { state: "running", step: 0, logBytes: 0 } },
      { method: "PUT", path: "/v1/runner/log", auth: "lease", octet: { headers: { "content-range": "bytes 0-2/*" } } },
      { method: "POST", path: "/v1/runner/artifacts", auth: "lease", json: { name: "b", size: 1, sha256: "b".repeat(64) } },
      { method: "PUT", path: artUrl, auth: "lease", octet: { headers: { "content-range": "bytes 0-2/3" } } },
      { method: "HEAD", path: artUrl, auth: "lease" },
      { method: "GET", path: artUrl, auth: "lease" },
      { method: "POST", path: "/v1/runner/complete", auth: "lease", json: completeBody() },
      { method: "POST", path: "/v1/runner/cancel-ack", auth: "lease", json: completeBody() },
      { method: "GET", path: "/v1/runner/source", auth: "lease" },
      { method: "POST", path: "/v1/controller/registrations", auth: "controller", json: { count: 1, labels: [] } },
      { method: "GET", path: "/v1/controller/demand", auth: "controller" },
      { method: "PUT", path: "/v1/controller/capacity", auth: "controller", json: { pools: [] } },
      { method: "POST", path: "/v1/jobs", auth: "api", json: { spec: jobSpec(), fork: false } },
      { method: "GET", path: "/v1/jobs", auth: "api" },
      { method: "GET", path: `/v1/jobs/${jobId}`, auth: "api" },
      { method: "GET", path: `/v1/jobs/${jobId}/log`, auth: "api" },
      { method: "POST", path: `/v1/jobs/${jobId}/cancel`, auth: "api", json: { mode: "graceful" } },
      { method: "GET", path: `/v1/jobs/${jobId}/artifacts/x.txt`, auth: "api" },
      { method: "POST", path: "/v1/sources", auth: "api", octet: { headers: {} } },
    ];

    const wrongKind = (k: Kind): string => (k === "api" ? tokens.controller : tokens.api);
    const problems: string[] = [];
    const expect = (what: string, got: { status: number; body: { error?: { code?: string } } }, status: number, code?: string) => {
      const gotCode = got.body?.error?.code;
      if (got.status !== status || (code !== undefined && got.status !== 204 && gotCode !== code && !(got.body === undefined || Buffer.isBuffer(got.body)))) {
        problems.push(`${what}: got ${got.status} ${gotCode ?? ""}, want ${status} ${code ?? ""}`);
      }
    };

    for (const e of endpoints) {
      const name = `${e.method} ${e.path}`;
      const body = e.json !== undefined ? { json: e.json } : e.octet ? { body: Buffer.from("abc"), headers: { "content-type": "application/octet-stream", ...e.octet.headers } } : {};
      expect(`${name} without a token`, await s.call(e.method, e.path, { ...body }), 401, "E_UNAUTHORIZED");
      expect(`${name} with a garbage token`, await s.call(e.method, e.path, { ...body, token: "dci_api_garbage" }), 401, "E_TOKEN_INVALID");
      expect(`${name} with the wrong kind of token`, await s.call(e.method, e.path, { ...body, token: wrongKind(e.auth) }), 401, "E_TOKEN_INVALID");
      expect(`${name} with a malformed header`, await s.call(e.method, e.path, { ...body, headers: { ...("headers" in body ? body.headers : {}), authorization: `Basic ${tokens[e.auth]}` } }), 401, "E_UNAUTHORIZED");
      const token = tokens[e.auth];
      if (e.json !== undefined) {
        const h = { "content-type": "application/json" };
        expect(`${name} with broken JSON`, await s.call(e.method, e.path, { token, body: "{not json", headers: h }), 400, "E_INVALID");
        expect(`${name} with an unknown field`, await s.call(e.method, e.path, { token, json: { ...e.json, extra: 1 } }), 400, "E_INVALID");
        expect(`${name} with a wrong type`, await s.call(e.method, e.path, { token, json: [] }), 400, "E_INVALID");
        const firstKey = Object.keys(e.json)[0] as string;
        expect(`${name} with a wrongly typed field`, await s.call(e.method, e.path, { token, json: { ...e.json, [firstKey]: { nested: true } } }), 400, "E_INVALID");
        expect(`${name} oversized`, await s.call(e.method, e.path, { token, json: { ...e.json, pad: "x".repeat(70 * 1024) } }), 413, "E_TOO_LARGE");
        expect(`${name} with a text body`, await s.call(e.method, e.path, { token, body: "hello", headers: { "content-type": "text/plain" } }), 415, "E_MEDIA_TYPE");
      }
      if (e.octet) {
        expect(`${name} with a JSON body`, await s.call(e.method, e.path, { token, json: { a: 1 }, headers: e.octet.headers }), 415, "E_MEDIA_TYPE");
      }
    }
    // oversized strings and arrays inside otherwise valid bodies
    const longName = await s.api("POST", "/v1/jobs", { spec: jobSpec({ name: "x".repeat(500) }), fork: false });
    expect("job name too long", longName, 400, "E_INVALID");
    const manySteps = await s.api("POST", "/v1/jobs", { spec: jobSpec({ steps: Array.from({ length: 300 }, () => ({ name: "s", run: "true" })) }), fork: false });
    expect("too many steps", manySteps, 400, "E_INVALID");
    const badArtifactName = await s.call("POST", "/v1/runner/artifacts", { token: lease.leaseToken, json: { name: "../etc/passwd", size: 1, sha256: "c".repeat(64) } });
    expect("artifact name with a path", badArtifactName, 400, "E_INVALID");
    const longWait = await s.call("POST", "/v1/runner/lease", { token: spareSession, json: { waitMs: 3_600_000 } });
    expect("lease wait beyond the maximum", longWait, 400, "E_INVALID");
    expect("negative demand wait", await s.ctl("GET", "/v1/controller/demand?waitMs=-1"), 400, "E_INVALID");
    expect("unknown job state filter", await s.api("GET", "/v1/jobs?state=weird"), 400, "E_INVALID");
    expect("unknown job", await s.api("GET", "/v1/jobs/job_nope"), 404, "E_NOT_FOUND");
    expect("unknown route", await s.api("GET", "/v1/nothing"), 404, "E_NOT_FOUND");
    assert.deepEqual(problems, []);
  } finally {
    await s.close();
  }
});

void test("a job whose env or secret value holds a NUL byte is refused with 400 E_INVALID", async () => {
  const s = await startTestServer({});
  try {
    const env = await s.call("POST", "/v1/jobs", { token: s.srv.apiToken, json: { spec: { ...jobSpec(), env: { A: "x\u0000y" } }, fork: false } });
    assert.equal(env.status, 400);
    assert.equal(env.body.error.code, "E_INVALID");
    const secret = await s.call("POST", "/v1/jobs", { token: s.srv.apiToken, json: { spec: { ...jobSpec(), secrets: { S: "\u0000" } }, fork: false } });
    assert.equal(secret.status, 400);
    const ok = await s.call("POST", "/v1/jobs", { token: s.srv.apiToken, json: { spec: { ...jobSpec(), env: { A: "x y" } }, fork: false } });
    assert.equal(ok.status, 201);
  } finally {
    await s.close();
  }
});
