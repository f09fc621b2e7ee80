import assert from "node:assert/strict";
import { createServer } from "node:http";
import { test } from "node:test";
import { isDeltaError } from "../base/errors.ts";
import { ConnectionPool, HttpClient, serverUrls } from "./http.ts";

void test("a server list is comma-separated http(s) URLs", () => {
  assert.deepEqual(serverUrls("http://a:1/, https://b:2"), ["http://a:1", "https://b:2"]);
  assert.throws(() => serverUrls("http://a:1,ftp://b"), /http\(s\)/);
  assert.throws(() => serverUrls(" , "), /http\(s\)/);
});

void test("a replica that does not answer (refused, 503) hands later requests to the next one", async () => {
  let status = 200;
  const live = createServer((_req, res) => res.writeHead(status, { "content-type": "application/json" }).end("{}"));
  await new Promise<void>((r) => live.listen(0, "127.0.0.1", r));
  const port = (live.address() as { port: number }).port;
  const dead = createServer();
  await new Promise<void>((r) => dead.listen(0, "127.0.0.1", r));
  const deadUrl = `http://127.0.0.1:${(dead.address() as { port: number }).port}`;
  await new Promise<void>((r) => dead.close(() => r()));
  const liveUrl = `http://127.0.0.1:${port}`;
  const http = new HttpClient(`${deadUrl},${liveUrl}`, { timeoutMs: 2_000 });
  try {
    assert.equal(http.baseUrl, deadUrl);
    await assert.rejects(http.call({ method: "GET", path: "/" }), (err) => isDeltaError(err, "E_NETWORK"));
    assert.equal(http.baseUrl, liveUrl);
    assert.equal((await http.call({ method: "GET", path: "/" })).status, 200);
    status = 503;
    await assert.rejects(http.call({ method: "GET", path: "/" }));
    assert.equal(http.baseUrl, deadUrl, "a 503 moves on too (round the list)");
  } finally {
    await http.close();
    await new Promise<void>((r) => live.close(() => r()));
  }
});

void test("clients on a shared pool reuse its connection, each sends only its own token, and destroying one stops only its requests", async () => {
  const seen: Array<{ port: number | undefined; auth: string | undefined }> = [];
  const held: Array<() => void> = [];
  const server = createServer((req, res) => {
    seen.push({ port: req.socket.remotePort, auth: req.headers.authorization });
    const answer = () => res.writeHead(200, { "content-type": "application/json" }).end("{}");
    if (req.url === "/hold") held.push(answer);
    else answer();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const pool = new ConnectionPool({ connectTimeoutMs: 2_000 });
  const a = new HttpClient(url, { timeoutMs: 5_000, pool });
  const b = new HttpClient(url, { timeoutMs: 5_000, pool });
  try {
    await a.call({ method: "GET", path: "/", token: "token-a" });
    await a.destroy();
    await new Promise((r) => setImmediate(r)); // the pool takes the connection back
    await b.call({ method: "GET", path: "/", token: "token-b" });
    await b.call({ method: "GET", path: "/" });
    assert.deepEqual(seen.map((s) => s.auth), ["Bearer token-a", "Bearer token-b", undefined], "a token goes with its own request only");
    assert.equal(seen[1]?.port, seen[0]?.port, "the connection that served a's request served b's next");
    await assert.rejects(a.call({ method: "GET", path: "/" }), (err) => isDeltaError(err, "E_CLOSED"));
    const c = new HttpClient(url, { timeoutMs: 5_000, pool });
    const pending = c.call({ method: "GET", path: "/hold" });
    while (held.length === 0) await new Promise((r) => setImmediate(r));
    await c.destroy();
    await assert.rejects(pending, (err) => isDeltaError(err, "E_CLOSED"));
    assert.equal((await b.call({ method: "GET", path: "/" })).status, 200, "the pool still serves the other clients");
  } finally {
    for (const answer of held) answer();
    await pool.close();
    await new Promise<void>((r) => server.close(() => r()));
  }
});
