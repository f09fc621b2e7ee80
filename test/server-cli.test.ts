/** `deltaci server` flags → ServerOptions (the same helpers `deltaci up` uses). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Command } from "commander";
import { addServerOptions, serverOptionsFromFlags, type ServerFlags } from "../src/cli/commands/server.ts";
import { logArchiveMode } from "../src/server/index.ts";

function parse(args: string[]): ServerFlags {
  const cmd = addServerOptions(new Command("server").exitOverride());
  cmd.parse(args, { from: "user" });
  return cmd.opts<ServerFlags>();
}

void test("durations, sizes and counts parse into ServerOptions", () => {
  const o = serverOptionsFromFlags(parse([
    "--listen", "0.0.0.0:9999", "--data-dir", "/tmp/d", "--lease-ttl", "2s", "--heartbeat-interval", "500ms", "--max-attempts", "5",
    "--log-limit", "1Mi", "--tail-window", "10m", "--hard-stop", "1m", "--registration-ttl", "30s", "--durability", "normal",
  ]));
  assert.equal(o.host, "0.0.0.0");
  assert.equal(o.port, 9999);
  assert.equal(o.dataDir, "/tmp/d");
  assert.equal(o.leaseTtlMs, 2000);
  assert.equal(o.heartbeatIntervalMs, 500);
  assert.equal(o.maxAttempts, 5);
  assert.equal(o.logLimitBytes, 1024 * 1024);
  assert.equal(o.tailWindowMs, 600_000);
  assert.equal(o.hardStopMs, 60_000);
  assert.equal(o.registrationTtlMs, 30_000);
  assert.equal(o.durability, "normal");
});

void test("defaults leave the server's own defaults in place; junk is refused", () => {
  const o = serverOptionsFromFlags(parse([]));
  assert.equal(o.host, "127.0.0.1");
  assert.equal(o.port, 8181);
  assert.equal(o.leaseTtlMs, undefined);
  assert.throws(() => serverOptionsFromFlags(parse(["--lease-ttl", "soon"])), /invalid duration/);
  assert.throws(() => serverOptionsFromFlags(parse(["--max-attempts", "0"])), /positive integer/);
  assert.throws(() => serverOptionsFromFlags(parse(["--listen", "nowhere"])), /listen/);
  assert.throws(() => parse(["--durability", "sometimes"]));
});

void test("--retention needs a unit and enables --gc-interval; absent, nothing is collected", () => {
  const o = serverOptionsFromFlags(parse(["--retention", "30d", "--gc-interval", "5m"]));
  assert.equal(o.retentionMs, 30 * 24 * 3_600_000);
  assert.equal(o.gcIntervalMs, 300_000);
  assert.equal(serverOptionsFromFlags(parse([])).retentionMs, undefined);
  assert.throws(() => serverOptionsFromFlags(parse(["--retention", "30"])), /needs a unit/);
  assert.throws(() => serverOptionsFromFlags(parse(["--retention", "0d"])), /longer than 0/);
  assert.throws(() => serverOptionsFromFlags(parse(["--gc-interval", "5m"])), /needs --retention/);
});

void test("--archive-logs: auto leaves the server's choice, on and off force it; the choice by default is off only for a shared state on a filesystem blob store", () => {
  assert.equal(serverOptionsFromFlags(parse([])).archiveLogs, undefined);
  assert.equal(serverOptionsFromFlags(parse(["--archive-logs", "auto"])).archiveLogs, undefined);
  assert.equal(serverOptionsFromFlags(parse(["--archive-logs", "on"])).archiveLogs, true);
  assert.equal(serverOptionsFromFlags(parse(["--archive-logs", "off"])).archiveLogs, false);
  assert.throws(() => parse(["--archive-logs", "sometimes"]));
  assert.equal(logArchiveMode(undefined, false, "fs"), "on");
  assert.equal(logArchiveMode(undefined, true, "s3"), "on");
  assert.match(logArchiveMode(undefined, true, "fs"), /^off: replicas would not share/);
  assert.match(logArchiveMode(true, true, "fs"), /^on \(--archive-logs on\)/);
  assert.match(logArchiveMode(false, false, "s3"), /^off \(--archive-logs off\)/);
});
