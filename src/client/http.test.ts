import assert from "node:assert/strict";
import { createServer } from "node:http";
import { test } from "node:test";
import { isDeltaError } from "../base/errors.ts";
import { HttpClient, serverUrls } from "./http.ts";

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
