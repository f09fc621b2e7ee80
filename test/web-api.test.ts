/**
 * The web view's HTTP side against a real server on loopback (no browser): page routes and
 * their headers, hashed assets with an immutable cache, sign-in rules, CSRF and origin checks,
 * the job list's filters (state, name, label) and paging, and the fleet's pools and idle runners.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { buildWeb } from "../scripts/build-web.mjs";
import type { FleetSnapshot } from "../src/server/web/fleet.ts";
import { startHarness, type Harness } from "./controller-harness.ts";
import { startTestServer } from "./server-harness.ts";

let h: Harness;
let cookie = "";
let csrf = "";

before(async () => {
  await buildWeb();
  h = await startHarness();
  const r = await fetch(`${h.server.url}/web/session`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token: h.server.apiToken }) });
  assert.equal(r.status, 200);
  cookie = (r.headers.get("set-cookie") ?? "").split(";")[0] ?? "";
  csrf = ((await r.json()) as { csrf: string }).csrf;
});
after(async () => h?.cleanup());

const get = (path: string, headers: Record<string, string> = { cookie }) => fetch(h.server.url + path, { headers, redirect: "manual" });

void test("pages: shell with a strict CSP, redirect without a session, hashed assets cached for a year", async () => {
  const anon = await get("/jobs/job_x", {});
  assert.equal(anon.status, 303);
  assert.equal(anon.headers.get("location"), "/login");
  const page = await get("/");
  assert.equal(page.status, 200);
  const csp = page.headers.get("content-security-policy") ?? "";
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.equal(page.headers.get("cache-control"), "no-store");
  const html = await page.text();
  assert.doesNotMatch(html, /<script>|<style>| style=/, "no inline script or style");
  const js = /src="(\/web\/assets\/app\.[0-9a-f]{16}\.js)"/.exec(html)?.[1];
  assert.ok(js, html);
  const asset = await get(js);
  assert.equal(asset.status, 200);
  assert.equal(asset.headers.get("cache-control"), "public, max-age=31536000, immutable");
  assert.match(asset.headers.get("content-type") ?? "", /javascript/);
  assert.equal((await get("/web/assets/app.0000000000000000.js")).status, 404);
});

void test("sign-in: only the API token, JSON only, same origin; writes need the CSRF header", async () => {
  const post = (body: string, headers: Record<string, string>) => fetch(`${h.server.url}/web/session`, { method: "POST", headers, body });
  assert.equal((await post(JSON.stringify({ token: h.server.controllerToken }), { "content-type": "application/json" })).status, 401);
  assert.equal((await post(`token=${h.server.apiToken}`, { "content-type": "application/x-www-form-urlencoded" })).status, 415);
  assert.equal((await post(JSON.stringify({ token: h.server.apiToken }), { "content-type": "application/json", origin: "http://evil.example" })).status, 403);
  const id = await h.submit({ steps: [{ name: "s", run: "true" }] });
  const cancel = (headers: Record<string, string>) =>
    fetch(`${h.server.url}/web/api/jobs/${id}/cancel`, { method: "POST", headers: { cookie, "content-type": "application/json", ...headers }, body: '{"mode":"graceful"}' });
  assert.equal((await cancel({})).status, 403);
  assert.equal((await cancel({ "x-deltaci-csrf": csrf, "sec-fetch-site": "cross-site" })).status, 403);
  // one character changed (a token that ends in "x" already got "x" before: a 1-in-64 flake)
  assert.equal((await cancel({ "x-deltaci-csrf": `${csrf.slice(0, -1)}${csrf.endsWith("x") ? "y" : "x"}` })).status, 403);
  const ok = await cancel({ "x-deltaci-csrf": csrf });
  assert.equal(ok.status, 200);
  assert.equal(((await ok.json()) as { state: string }).state, "canceled");
});

void test("the job list: newest first, filters by state, name and label, pages by seq", async () => {
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) ids.push(await h.submit({ name: `page-${i}`, runsOn: { labels: i % 2 === 0 ? ["even", "x"] : ["odd"] }, steps: [{ name: "s", run: "true" }] }));
  type Page = { jobs: Array<{ jobId: string; name: string; seq: number }>; next: number | null };
  const list = async (q: string) => (await (await get(`/web/api/jobs?${q}`)).json()) as Page;
  const first = await list("name=page-&limit=2");
  assert.deepEqual(first.jobs.map((j) => j.name), ["page-4", "page-3"]);
  assert.ok(first.next !== null);
  const second = await list(`name=page-&limit=2&before=${first.next}`);
  assert.deepEqual(second.jobs.map((j) => j.name), ["page-2", "page-1"]);
  const third = await list(`name=page-&limit=2&before=${second.next}`);
  assert.deepEqual(third.jobs.map((j) => j.name), ["page-0"]);
  assert.equal(third.next, null);
  assert.deepEqual((await list("label=even")).jobs.map((j) => j.name), ["page-4", "page-2", "page-0"]);
  assert.deepEqual((await list("label=odd&name=page-1")).jobs.map((j) => j.name), ["page-1"]);
  assert.deepEqual((await list("state=canceled&name=page-")).jobs, []);
  assert.equal((await get("/web/api/jobs?state=bogus")).status, 400);
  assert.equal((await get("/web/api/jobs", {})).status, 401);
});

void test("fleet: pools carry the min-idle their controller declared; runners waiting for a job are listed as idle", async () => {
  const s = await startTestServer();
  try {
    const signIn = await fetch(`${s.url}/web/session`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token: s.srv.apiToken }) });
    const session = (signIn.headers.get("set-cookie") ?? "").split(";")[0] ?? "";
    const fleet = async () => (await (await fetch(`${s.url}/web/api/fleet`, { headers: { cookie: session } })).json()) as FleetSnapshot;
    const pool = { name: "linux", os: "linux", arch: "x64", labels: ["linux"], resources: { cpus: 4, memoryMiB: 8192, diskMiB: 8192 } };
    assert.equal((await s.ctl("PUT", "/v1/controller/capacity", { pools: [{ ...pool, max: 4, minIdle: 2 }, { ...pool, name: "old", max: 1 }] })).status, 200);
    assert.deepEqual((await fleet()).pools.map((p) => [p.name, p.max, p.minIdle]), [["linux", 4, 2], ["old", 1, undefined]]);
    const runner = await s.runner({ labels: ["linux"] });
    const waiting = s.lease(runner, 30_000);
    for (let i = 0; ; i++) {
      const idle = (await fleet()).runners.filter((r) => r.state === "idle");
      if (idle.length === 1) {
        assert.deepEqual([idle[0]?.name, idle[0]?.labels, idle[0]?.jobId], ["t", ["linux"], null]);
        break;
      }
      assert.ok(i < 200, "the waiting runner never showed as idle");
      await new Promise((r) => setTimeout(r, 50));
    }
    const id = await s.submit({ runsOn: { labels: ["linux"] } });
    assert.equal((await waiting)?.jobId, id);
    const after = (await fleet()).runners;
    assert.deepEqual(after.map((r) => [r.state, r.jobId]), [["leased", id]]);
  } finally {
    await s.close();
  }
});

void test("web: false (deltaci run's embedded server): no page, asset or web API route; the protocol is served", async () => {
  const s = await startTestServer({ web: false });
  try {
    for (const path of ["/", "/login", "/web/api/fleet"]) assert.equal((await fetch(s.url + path, { redirect: "manual" })).status, 404, path);
    const signIn = await fetch(`${s.url}/web/session`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token: s.srv.apiToken }) });
    assert.equal(signIn.status, 404);
    const id = await s.submit({});
    assert.match(id, /^job_/);
  } finally {
    await s.close();
  }
});
