import { test } from "node:test";
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { pino } from "pino";
import { buildApp } from "./app.ts";

/** The app with a real pino logger (redacting as the server's does) writing its lines to `lines`. */
function appLogging(lines: Array<Record<string, unknown>>, redact = ["*.leaseToken", "reqId"]) {
  const out = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString("utf8").split("\n")) if (l !== "") lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  const logger = pino({ level: "info", redact: { paths: redact, censor: "[redacted]" } }, out);
  const app = buildApp({ logger, jsonBodyLimitBytes: 1024, metrics: null });
  app.get("/quiet", async () => ({ ok: true }));
  app.get("/talks", async (req) => {
    req.log.info({ lease: { leaseToken: "dci_secret" } }, "talked");
    req.log.debug("below the level");
    return { ok: true };
  });
  app.get("/fails", async () => {
    throw new Error("boom");
  });
  return app;
}

void test("a request logs with its own reqId, redacted as the logger says; quiet requests log nothing", async () => {
  const lines: Array<Record<string, unknown>> = [];
  const app = appLogging(lines);
  try {
    assert.equal((await app.inject({ method: "GET", url: "/quiet" })).statusCode, 200);
    assert.equal(lines.length, 0);
    assert.equal((await app.inject({ method: "GET", url: "/talks" })).statusCode, 200);
    assert.equal(lines.length, 1);
    assert.equal(lines[0]?.msg, "talked");
    assert.deepEqual(lines[0]?.lease, { leaseToken: "[redacted]" });
    // The child's bindings go through the redaction too (here reqId is one of its paths).
    assert.equal(lines[0]?.reqId, "[redacted]");
    assert.equal((await app.inject({ method: "GET", url: "/fails" })).statusCode, 500);
    assert.equal(lines.length, 2);
    assert.equal(lines[1]?.msg, "request failed");
    assert.equal(lines[1]?.level, 50);
  } finally {
    await app.close();
  }
});

void test("two requests' loggers are separate children, each with its own reqId", async () => {
  const lines: Array<Record<string, unknown>> = [];
  const app = appLogging(lines, ["*.leaseToken"]);
  app.get("/id", async (req) => {
    req.log.warn({ id: req.id }, "id");
    return {};
  });
  try {
    await app.inject({ method: "GET", url: "/id" });
    await app.inject({ method: "GET", url: "/id" });
    assert.equal(lines.length, 2);
    assert.notEqual(lines[0]?.id, lines[1]?.id);
    assert.equal(lines[0]?.reqId, lines[0]?.id);
    assert.equal(lines[1]?.reqId, lines[1]?.id);
  } finally {
    await app.close();
  }
});
