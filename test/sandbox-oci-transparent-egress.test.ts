/**
 * Transparent egress end to end in the oci sandbox (real crun, as root), against a test host in a
 * network namespace of our own: a job with `network.transparent` whose clients ignore the proxy
 * (bash's /dev/tcp, curl --noproxy) reaches what its allowlist names, by address or by a name the
 * slot's DNS answered with a stand-in address, and is refused the rest, all
 * audited; a job without it cannot get out, even in a slot whose path exists; the slot's path is
 * made once and reused by its next job; nothing is left after a job (inspectSlot) and nothing of the
 * path (netns, veth, nft table) after the slot's reap, nor after a failed create.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { systemClock } from "../src/base/clock.ts";
import { runStep } from "../src/sandbox/conformance.ts";
import { CrunSandboxFactory } from "../src/sandbox/oci/crun-sandbox-factory.ts";
import { transparentNames } from "../src/sandbox/oci/transparent-egress.ts";
import type { SlotInfo } from "../src/sandbox/types.ts";
import { baseSpec, capturingLogger, createNetHostSafe, randomSlot, tempRoot } from "./support/sandbox-net-env.ts";

/** What of a slot's transparent path exists on the host: veth, nft table, netns. */
function pathLeftovers(index: number): string[] {
  const n = transparentNames(index);
  const found: string[] = [];
  const has = (cmd: string, args: string[]) => {
    try {
      execFileSync(cmd, args, { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  };
  if (has("ip", ["link", "show", n.hostIf])) found.push(`veth ${n.hostIf}`);
  if (has("nft", ["list", "table", "inet", n.table])) found.push(`nft ${n.table}`);
  if (execFileSync("ip", ["netns", "list"], { encoding: "utf8" }).split("\n").some((l) => l.split(" ")[0] === n.netns)) found.push(`netns ${n.netns}`);
  return found;
}

/** Raw TCP that knows nothing of proxies: an HTTP/1.0 request without Host over bash's /dev/tcp. */
const rawGet = (addr: string, port: number) =>
  `r=$( (exec 3<>/dev/tcp/${addr}/${port} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 10 cat <&3 | tail -n 1) 2>/dev/null ); echo "\${r:-refused ${port}}"`;

void describe("oci transparent egress", { timeout: 300_000 }, () => {
  const root = tempRoot("te");
  let host: Awaited<ReturnType<typeof createNetHostSafe>>;
  const names: Record<string, string[]> = {};
  const factory = new CrunSandboxFactory({
    clock: systemClock,
    logger: capturingLogger(),
    resolveHost: async (name) => names[name] ?? [],
  });
  const slots: SlotInfo[] = [];
  let banner: ChildProcess | null = null;

  before(async () => {
    host = await createNetHostSafe();
    names["good.deltaci.test"] = [host.address];
    names["git.deltaci.test"] = [host.address];
    // a server that speaks first, as sshd does: nothing to peek at, only the name can decide
    const srv = spawn("ip", ["netns", "exec", host.ns, process.execPath, "-e",
      `require("node:net").createServer((s) => s.end("SSH-2.0-deltaci-test\\r\\n")).listen(2222, process.argv[1], () => console.log("ready"))`, host.address],
    { stdio: ["ignore", "pipe", "inherit"] });
    banner = srv;
    await new Promise<void>((resolve, reject) => {
      srv.stdout?.once("data", () => resolve());
      srv.once("exit", (code) => reject(new Error(`banner server exited ${code}`)));
    });
  });
  after(async () => {
    if (banner?.exitCode === null) banner.kill("SIGKILL");
    host?.remove();
    for (const slot of slots) await factory.reapSlot(slot);
    await factory.close();
    rmSync(root, { recursive: true, force: true });
  });

  void it("in a prewarmed slot, raw TCP goes through the allowlist and is refused elsewhere, audited; a job without transparent cannot get out; the recycled slot's next job reuses the path; reaped with the slot", async () => {
    const slot = randomSlot(root);
    slots.push(slot);
    const audit = join(root, "audit.jsonl");
    writeFileSync(audit, "");
    const allow = [`${host.address}:8080`, "good.deltaci.test:8081", "git.deltaci.test:2222"];
    const transparent = () => baseSpec(slot, { network: { egress: "allowlist", allow, transparent: true }, auditLogPath: audit });
    const script = [
      "unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY",
      rawGet(host.address, 8080),
      rawGet(host.address, 8081),
      // a name from the HTTP Host header (no DNS in the job: curl is told the address)
      `curl -sS -m 10 --noproxy '*' --resolve good.deltaci.test:8081:${host.address} http://good.deltaci.test:8081/ 2>/dev/null || echo "refused by name"`,
      // names through the slot's DNS: a stand-in address for a listed name, decided on the name
      "getent hosts good.deltaci.test | cut -d' ' -f1",
      rawGet("good.deltaci.test", 8081),
      rawGet("good.deltaci.test", 8080),
      "getent hosts evil.deltaci.test || echo 'no such name'",
      // server speaks first (an ssh banner), reached by name: the client only reads
      "(exec 3<>/dev/tcp/git.deltaci.test/2222 && timeout 10 head -n 1 <&3 | tr -d '\\r') || echo 'no banner'",
    ].join("\n");

    // the slot has a prewarmed sandbox (of the default shape) when the transparent job comes
    const { jobId: _j, sourceArchive: _s, auditLogPath: _a, ...warm } = baseSpec(slot);
    await factory.prewarm(warm);
    const first = transparent();
    const sb = await factory.create(first);
    let out: string;
    try {
      out = (await runStep(sb, script, { shell: "bash" })).stdout.toString();
    } finally {
      await sb.dispose();
      assert.deepEqual(await factory.inspectSlot(slot), []);
    }
    assert.equal(out, "hello from test host port 8080\nrefused 8081\nhello from test host port 8081\n198.18.0.1\nhello from test host port 8081\nrefused 8080\nno such name\nSSH-2.0-deltaci-test\n");
    const hostIf = transparentNames(slot.index).hostIf;
    const ifindex = readFileSync(`/sys/class/net/${hostIf}/ifindex`, "utf8");

    // the slot's next job without transparent: the path exists but the job has its own empty netns
    const plain = await factory.create(baseSpec(slot, { network: { egress: "allowlist", allow }, auditLogPath: null }));
    try {
      const r = (await runStep(plain, `unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY\n${rawGet(host.address, 8080)}\ncurl -sS -m 5 --noproxy '*' http://${host.address}:8080/ 2>&1 || true`, { shell: "bash" })).stdout.toString();
      assert.match(r, /^refused 8080\n/);
      assert.match(r, /Network is unreachable|Couldn't connect|Failed to connect/);
      assert.doesNotMatch(r, /hello from test host/);
    } finally {
      await plain.dispose();
      assert.deepEqual(await factory.inspectSlot(slot), []);
    }

    // and the next transparent job in the recycled slot takes the same path
    const second = transparent();
    const sb2 = await factory.create(second);
    try {
      assert.equal((await runStep(sb2, script, { shell: "bash" })).stdout.toString(), out);
    } finally {
      await sb2.dispose();
      assert.deepEqual(await factory.inspectSlot(slot), []);
    }
    assert.equal(readFileSync(`/sys/class/net/${hostIf}/ifindex`, "utf8"), ifindex, "the slot's veth was kept, not remade");

    const entries = readFileSync(audit, "utf8").trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    const brief = entries.map((e) => `${String(e.job)} ${String(e.decision)} ${String(e.destination)}:${String(e.port)} ${String(e.via)}`);
    const perJob = (job: string) => [
      `${job} allowed ${host.address}:8080 transparent`,
      `${job} denied ${host.address}:8081 transparent`,
      `${job} allowed good.deltaci.test:8081 transparent`,
      `${job} allowed good.deltaci.test:8081 transparent`,
      `${job} denied good.deltaci.test:8080 transparent`,
      `${job} allowed git.deltaci.test:2222 transparent`,
    ];
    assert.deepEqual(brief, [...perJob(first.jobId), ...perJob(second.jobId)]);

    assert.notDeepEqual(pathLeftovers(slot.index), [], "the slot keeps its path between jobs");

    // a path someone broke (its veth deleted under it) is made anew for the next job
    execFileSync("ip", ["link", "del", hostIf]);
    const third = await factory.create(transparent());
    try {
      assert.equal((await runStep(third, rawGet(host.address, 8080), { shell: "bash" })).stdout.toString(), "hello from test host port 8080\n");
    } finally {
      await third.dispose();
    }
    await factory.reapSlot(slot);
    assert.deepEqual(pathLeftovers(slot.index), []);
  });

  void it("a dead runner's path is reaped with its slot; a failed create leaves nothing", async () => {
    const slot = randomSlot(root);
    slots.push(slot);
    // what a dead runner left: the slot's netns and veth with nobody listening
    const n = transparentNames(slot.index);
    execFileSync("ip", ["netns", "add", n.netns]);
    execFileSync("ip", ["link", "add", n.hostIf, "type", "veth", "peer", "name", n.jobIf, "netns", n.netns]);
    const reaped = new CrunSandboxFactory({ clock: systemClock, logger: capturingLogger() });
    try {
      await reaped.reapSlot(slot);
    } finally {
      await reaped.close();
    }
    assert.deepEqual(pathLeftovers(slot.index), []);

    // a transparent job whose create fails (an image that does not exist)
    const spec = baseSpec(slot, {
      network: { egress: "allowlist", allow: [`${host.address}:8080`], transparent: true },
      image: { kind: "oci", ref: join(root, "no-such-layout"), digest: `sha256:${"0".repeat(64)}` },
    });
    await assert.rejects(factory.create(spec));
    assert.deepEqual(await factory.inspectSlot(slot), []);
    assert.deepEqual(pathLeftovers(slot.index), []);
    await factory.reapSlot(slot);
    assert.deepEqual(pathLeftovers(slot.index), []);
  });
});
