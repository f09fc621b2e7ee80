import assert from "node:assert/strict";
import { test } from "node:test";
import { connect, createServer } from "node:tls";
import { sniffName } from "./egress-sniff.ts";

void test("sniffName: HTTP Host, partial input, raw bytes", () => {
  assert.deepEqual(sniffName(Buffer.from("GET / HTTP/1.1\r\nHost: good.test:8080\r\n\r\n")), { kind: "http", name: "good.test" });
  assert.deepEqual(sniffName(Buffer.from("GET / HTTP/1.1\r\nUser-Agent: x")), { kind: "more" });
  assert.deepEqual(sniffName(Buffer.from("GE")), { kind: "more" });
  assert.deepEqual(sniffName(Buffer.from("SSH-2.0-OpenSSH_9.2\r\n")), { kind: "raw" });
  assert.deepEqual(sniffName(Buffer.from([0x16, 3, 1])), { kind: "more" });
  assert.deepEqual(sniffName(Buffer.from([0x16, 3, 1, 0, 4, 2, 0, 0, 0])), { kind: "tls", name: null });
});

void test("sniffName: the SNI of a real ClientHello", async () => {
  // A listener that records the first bytes a real TLS client sends; no handshake is completed.
  const first = await new Promise<Buffer>((resolve, reject) => {
    const srv = createServer();
    srv.on("tlsClientError", () => undefined);
    const raw = srv.listen(0, "127.0.0.1", () => {
      const port = (raw.address() as { port: number }).port;
      const c = connect({ host: "127.0.0.1", port, servername: "good.test", rejectUnauthorized: false });
      c.on("error", () => undefined);
    });
    srv.removeAllListeners("connection");
    srv.prependListener("connection", (s) => {
      s.once("data", (d: Buffer) => {
        resolve(d);
        s.destroy();
        srv.close();
      });
    });
    srv.once("error", reject);
  });
  assert.deepEqual(sniffName(first), { kind: "tls", name: "good.test" });
});
