/** Network policy of the oci backend against test hosts in our own network namespaces. */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { CrunSandboxFactory } from "../src/sandbox/oci/crun-sandbox-factory.ts";
import { allowMatch, isInternalAddress } from "../src/sandbox/oci/egress-proxy.ts";
import { runStep } from "../src/sandbox/conformance.ts";
import { systemClock } from "../src/base/clock.ts";
import { baseSpec, capturingLogger, createNetHostSafe, randomSlot, tempRoot } from "./support/sandbox-net-env.ts";

void describe("oci network", { timeout: 300_000 }, () => {
  const root = tempRoot("net");
  let host: Awaited<ReturnType<typeof createNetHostSafe>>;
  let loopServer: Server;
  let loopPort = 0;
  const names: Record<string, string[]> = {};
  const factory = new CrunSandboxFactory({
    clock: systemClock,
    logger: capturingLogger(),
    resolveHost: async (name) => {
      const found = names[name];
      if (!found) throw new Error(`unknown test name ${name}`);
      return found;
    },
  });
  const slots: ReturnType<typeof randomSlot>[] = [];

  before(async () => {
    host = await createNetHostSafe();
    names["good.deltaci.test"] = [host.address];
    names["api.mirror.deltaci.test"] = [host.address];
    names["other.deltaci.test"] = [host.address];
    names["loop.deltaci.test"] = ["127.0.0.1"];
    loopServer = createServer((_req, res) => res.end("host loopback service\n"));
    await new Promise<void>((resolve) => loopServer.listen(0, "127.0.0.1", resolve));
    loopPort = (loopServer.address() as AddressInfo).port;
  });
  after(async () => {
    host?.remove();
    await new Promise((resolve) => loopServer?.close(resolve));
    for (const slot of slots) await factory.reapSlot(slot);
    const { rmSync } = await import("node:fs");
    rmSync(root, { recursive: true, force: true });
  });

  void it("matches allowlist patterns and recognizes internal addresses", () => {
    assert.equal(allowMatch(["*.example.org:443"], "a.b.example.org", 443), "*.example.org:443");
    assert.equal(allowMatch(["*.example.org:443"], "example.org", 443), null);
    assert.equal(allowMatch(["*.example.org:443"], "a.example.org", 80), null);
    assert.equal(allowMatch(["example.org"], "EXAMPLE.org.", 8080), "example.org");
    assert.equal(allowMatch(["example.org"], "evil-example.org", 80), null);
    for (const a of ["127.0.0.1", "127.1.2.3", "::1", "0.0.0.0", "169.254.169.254", "::ffff:127.0.0.1", "fe80::1"]) assert.equal(isInternalAddress(a), true, a);
    assert.equal(isInternalAddress("10.213.1.2"), false);
  });

  void it("default: loopback only, no route out", async () => {
    const slot = randomSlot(root);
    slots.push(slot);
    const spec = baseSpec(slot);
    const sb = await factory.create(spec);
    try {
      const r = await runStep(sb, `env | grep -ci proxy || true; curl -sS -m 5 http://${host.address}:8080/ 2>&1 || true; curl -sS -m 5 http://127.0.0.1:${loopPort}/ 2>&1 || true`);
      const out = r.stdout.toString();
      assert.match(out, /^0\n/);
      assert.match(out, /Network is unreachable|Couldn't connect|Failed to connect/);
      assert.doesNotMatch(out, /hello from test host|host loopback service/);
    } finally {
      await sb.dispose();
      assert.deepEqual(await factory.inspectSlot(slot), []);
    }
  });

  void it("allowlist: allowed hosts answer through the proxy, others are refused, all audited", async () => {
    const slot = randomSlot(root);
    slots.push(slot);
    const audit = join(root, "audit.jsonl");
    writeFileSync(audit, "");
    const spec = baseSpec(slot, {
      network: { egress: "allowlist", allow: ["good.deltaci.test:8080", "*.mirror.deltaci.test:8080", `loop.deltaci.test:${loopPort}`] },
      auditLogPath: audit,
    });
    const sb = await factory.create(spec);
    try {
      const r = await runStep(sb, [
        "curl -sS -m 10 http://good.deltaci.test:8080/",
        "curl -sS -m 10 -p http://api.mirror.deltaci.test:8080/",
        "curl -sS -m 10 http://good.deltaci.test:8081/",
        "curl -sS -m 10 -p http://other.deltaci.test:8080/ 2>&1 | grep -o 'CONNECT tunnel failed, response 403' || true",
        `curl -sS -m 10 http://loop.deltaci.test:${loopPort}/`,
        `curl -sS -m 5 --noproxy '*' http://${host.address}:8080/ 2>/dev/null || echo direct-refused`,
      ].join("\n"), { shell: "bash" });
      const out = r.stdout.toString();
      assert.match(out, /^hello from test host port 8080\nhello from test host port 8080\n/);
      assert.match(out, /egress to good\.deltaci\.test:8081 is not in the job's allowlist/);
      assert.match(out, /CONNECT tunnel failed, response 403/);
      assert.match(out, /loop\.deltaci\.test resolves to no address the job may reach/);
      assert.doesNotMatch(out, /host loopback service/);
      assert.match(out, /direct-refused\n$/);
    } finally {
      await sb.dispose();
      assert.deepEqual(await factory.inspectSlot(slot), []);
    }
    const entries = readFileSync(audit, "utf8").trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    const brief = entries.map((e) => `${e.decision} ${e.destination}:${e.port}`);
    assert.deepEqual(brief, [
      "allowed good.deltaci.test:8080",
      "allowed api.mirror.deltaci.test:8080",
      "denied good.deltaci.test:8081",
      "denied other.deltaci.test:8080",
      `denied loop.deltaci.test:${loopPort}`,
    ]);
    for (const e of entries) {
      assert.equal(e.job, spec.jobId);
      assert.ok(!Number.isNaN(Date.parse(String(e.time))));
    }
  });
});
