/**
 * Transparent egress (src/sandbox/oci/transparent-egress.ts) between network namespaces of our
 * own: a "job" netns whose clients ignore HTTP(S)_PROXY, and a test host netns running a raw TCP
 * echo server, an HTTPS server and an HTTP server. Allowed destinations answer, denied ones are
 * refused, every decision is in the audit log, and the veth and nft table are gone afterwards,
 * including after a failed set-up.
 */
import assert from "node:assert/strict";
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomInt } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { promisify } from "node:util";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { EgressProxy, type AuditEntry } from "../src/sandbox/oci/egress-proxy.ts";
import { TransparentEgress, transparentNames } from "../src/sandbox/oci/transparent-egress.ts";
import { createNetHost, type NetHost } from "./support/sandbox-nethost.ts";

const SERVERS = `
const net = require("node:net"), tls = require("node:tls"), fs = require("node:fs");
const [addr, dir] = process.argv.slice(1);
net.createServer((s) => s.pipe(s)).listen(9000, addr);
tls.createServer({ key: fs.readFileSync(dir + "/key.pem"), cert: fs.readFileSync(dir + "/cert.pem") }, (s) => {
  s.once("data", () => s.end("HTTP/1.1 200 OK\\r\\nContent-Length: 10\\r\\nConnection: close\\r\\n\\r\\nhello tls\\n"));
}).listen(8443, addr, () => console.log("ready"));
`;

/** Runs inside the job netns; HTTP(S)_PROXY point nowhere and nothing here reads them. Prints one JSON line. */
const CLIENT = `
const net = require("node:net"), tls = require("node:tls"), http = require("node:http");
const [addr] = process.argv.slice(1);
const tcp = (port) => new Promise((res) => {
  const s = net.connect(port, addr); let got = ""; s.setTimeout(5000, () => s.destroy());
  s.on("connect", () => s.write("ping")); s.on("data", (d) => { got += d; if (got === "ping") s.end(); });
  s.on("error", (e) => res("error " + e.code)); s.on("close", () => res(got || "closed"));
});
const https = (servername) => new Promise((res) => {
  const s = tls.connect({ host: addr, port: 8443, servername, rejectUnauthorized: false }); let got = "";
  s.setTimeout(5000, () => s.destroy());
  s.on("secureConnect", () => s.write("GET / HTTP/1.1\\r\\nHost: " + servername + "\\r\\n\\r\\n"));
  s.on("data", (d) => (got += d)); s.on("error", (e) => res("error " + e.code)); s.on("close", () => res(got.split("\\r\\n\\r\\n")[1] || "closed"));
});
const plain = (host) => new Promise((res) => {
  const r = http.get({ host: addr, port: 8080, headers: { host }, agent: false, timeout: 5000 }, (m) => { let b = ""; m.on("data", (d) => (b += d)); m.on("end", () => res(b)); });
  r.on("error", (e) => res("error " + e.code)); r.on("timeout", () => r.destroy());
});
const log = (k, p) => p.then((v) => { console.error(k, JSON.stringify(v)); return v; });
(async () => console.log(JSON.stringify({
  tcpAllowed: await log("tcpAllowed", tcp(9000)), tcpDenied: await log("tcpDenied", tcp(9001)),
  httpsAllowed: await log("httpsAllowed", https("good.test")), httpsDenied: await log("httpsDenied", https("evil.test")),
  httpAllowed: await log("httpAllowed", plain("plain.test")), httpDenied: await log("httpDenied", plain("evil.test")),
})))();
`;

function leftovers(index: number): string[] {
  const n = transparentNames(index);
  const out: string[] = [];
  try {
    execFileSync("ip", ["link", "show", n.hostIf], { stdio: "ignore" });
    out.push(n.hostIf);
  } catch {}
  try {
    execFileSync("nft", ["list", "table", "inet", n.table], { stdio: "ignore" });
    out.push(n.table);
  } catch {}
  return out;
}

void describe("transparent egress", { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), "deltaci-te-"));
  const jobNs = `dctj-${randomInt(1e9).toString(36)}`;
  const index = randomInt(1000, 16_000);
  let host: NetHost;
  let servers: ChildProcess | null = null;

  before(async () => {
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=good.test",
      "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")], { stdio: "ignore" });
    host = await createNetHost();
    const srv = spawn("ip", ["netns", "exec", host.ns, process.execPath, "-e", SERVERS, host.address, dir], { stdio: ["ignore", "pipe", "inherit"] });
    servers = srv;
    await new Promise<void>((resolve, reject) => {
      srv.stdout?.once("data", () => resolve());
      srv.once("exit", (code) => reject(new Error(`test servers exited ${code}`)));
    });
    execFileSync("ip", ["netns", "add", jobNs]);
  });

  after(async () => {
    if (servers?.pid && servers.exitCode === null) servers.kill("SIGKILL");
    host?.remove();
    try {
      execFileSync("ip", ["netns", "del", jobNs], { stdio: "ignore" });
    } catch {}
    await TransparentEgress.reap(index);
    rmSync(dir, { recursive: true, force: true });
  });

  void it("a raw TCP, an HTTPS and an HTTP client that ignore the proxy: allowed ones connect, denied ones are refused, all audited", async () => {
    const audit = join(dir, "audit.jsonl");
    const names: Record<string, string> = { "good.test": host.address, "plain.test": host.address, "evil.test": host.address };
    const allow = [`${host.address}:9000`, "good.test:8443", "plain.test:8080"];
    const proxy = await EgressProxy.start({
      socketPath: join(dir, "egress.sock"), jobId: "job_te", allow, auditLogPath: audit, logger: { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined } as never,
      resolve: async (n) => (names[n] ? [names[n]] : []),
    });
    const te = await TransparentEgress.setUp({ index, netns: { name: jobNs } });
    const attached = te.attach({ allow, proxy });
    let out: Record<string, string>;
    try {
      // Asynchronously: the listener answering the client runs in this process.
      const { stdout } = await promisify(execFile)("ip", ["netns", "exec", jobNs, process.execPath, "-e", CLIENT, host.address], {
        env: { ...process.env, HTTP_PROXY: "http://127.0.0.1:1", HTTPS_PROXY: "http://127.0.0.1:1", http_proxy: "http://127.0.0.1:1", https_proxy: "http://127.0.0.1:1" },
        timeout: 60_000,
      });
      out = JSON.parse(stdout) as Record<string, string>;
    } finally {
      attached.detach();
      await te.dispose();
      await proxy.close();
    }
    assert.deepEqual(leftovers(index), [], "veth and nft table removed");
    assert.equal(out.tcpAllowed, "ping");
    assert.equal(out.httpsAllowed, "hello tls\n");
    assert.equal(out.httpAllowed, "hello from test host port 8080\n");
    for (const k of ["tcpDenied", "httpsDenied", "httpDenied"]) assert.ok(out[k] === "closed" || out[k]?.startsWith("error"), `${k}: ${out[k]}`);
    const entries = readFileSync(audit, "utf8").trim().split("\n").map((l) => JSON.parse(l) as AuditEntry);
    const seen = entries.map((e) => `${e.decision} ${e.destination}:${e.port} ${e.via ?? "-"}`).sort();
    assert.deepEqual(seen, [
      `allowed ${host.address}:9000 transparent`, "allowed good.test:8443 transparent", "allowed plain.test:8080 transparent",
      `denied ${host.address}:9001 transparent`, "denied evil.test:8080 transparent", "denied evil.test:8443 transparent",
    ].sort());
  });

  void it("one slot path serves job after job: each job gets its own allowlist and audit log, a detach closes the job's connections, none passes between jobs", async () => {
    const te = await TransparentEgress.setUp({ index, netns: { name: jobNs } });
    const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined } as never;
    const exec = promisify(execFile);
    // One raw TCP exchange from the job netns: "ping" echoed back, or how it ended.
    const ping = async (port: number) => (await exec("ip", ["netns", "exec", jobNs, process.execPath, "-e", `
      const s = require("node:net").connect(${port}, "${host.address}"); let got = ""; s.setTimeout(5000, () => s.destroy());
      s.on("connect", () => s.write("ping")); s.on("data", (d) => { got += d; if (got === "ping") s.end(); });
      s.on("error", (e) => { console.log("error " + e.code); process.exit(0); }); s.on("close", () => console.log(got || "closed"));`], { timeout: 30_000 })).stdout.trim();
    try {
      const jobs = [{ id: "job_a", allow: [`${host.address}:9000`] }, { id: "job_b", allow: [] as string[] }];
      const seen: string[][] = [];
      for (const j of jobs) {
        const audit = join(dir, `${j.id}.jsonl`);
        const proxy = await EgressProxy.start({ socketPath: join(dir, `${j.id}.sock`), jobId: j.id, allow: j.allow, auditLogPath: audit, logger: quiet, resolve: async () => [] });
        const attached = te.attach({ allow: j.allow, proxy });
        try {
          seen.push([await ping(9000)]);
        } finally {
          attached.detach();
          await proxy.close();
        }
        seen[seen.length - 1]?.push(...readFileSync(audit, "utf8").trim().split("\n").map((l) => { const e = JSON.parse(l) as AuditEntry; return `${e.job} ${e.decision} ${e.port}`; }));
      }
      assert.deepEqual(seen, [["ping", "job_a allowed 9000"], [seen[1]?.[0] ?? "", "job_b denied 9000"]]);
      assert.ok(seen[1]?.[0] === "closed" || seen[1]?.[0]?.startsWith("error"), `denied in job b: ${seen[1]?.[0]}`);

      // A live connection of a job is closed by its detach; with no job attached, nothing gets out.
      const proxy = await EgressProxy.start({ socketPath: join(dir, "job_c.sock"), jobId: "job_c", allow: [`${host.address}:9000`], auditLogPath: null, logger: quiet, resolve: async () => [] });
      const attached = te.attach({ allow: [`${host.address}:9000`], proxy });
      const live = spawn("ip", ["netns", "exec", jobNs, process.execPath, "-e", `
        const s = require("node:net").connect(9000, "${host.address}");
        s.on("connect", () => s.write("ping")); s.once("data", (d) => console.log(String(d))); s.on("close", () => console.log("closed"));`], { stdio: ["ignore", "pipe", "inherit"] });
      const lines: string[] = [];
      const ended = new Promise<void>((resolve) => live.once("exit", () => resolve()));
      await new Promise<void>((resolve) => live.stdout?.on("data", (d: Buffer) => {
        lines.push(...String(d).trim().split("\n"));
        if (lines.includes("ping")) resolve();
      }));
      attached.detach();
      await ended;
      await proxy.close();
      assert.deepEqual(lines, ["ping", "closed"]);
      const after = await ping(9000);
      assert.ok(after === "closed" || after.startsWith("error"), `with no job attached: ${after}`);
    } finally {
      await te.dispose();
    }
    assert.deepEqual(leftovers(index), []);
  });

  void it("a set-up that fails half-way leaves no veth and no table", async () => {
    const proxy = await EgressProxy.start({
      socketPath: join(dir, "egress2.sock"), jobId: "job_te2", allow: [], auditLogPath: null, logger: { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined } as never,
      resolve: async () => [],
    });
    try {
      await assert.rejects(TransparentEgress.setUp({ index, netns: { name: `${jobNs}-missing` } }));
      assert.deepEqual(leftovers(index), []);
    } finally {
      await proxy.close();
    }
  });
});
