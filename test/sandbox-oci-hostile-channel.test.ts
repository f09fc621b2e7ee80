/**
 * Hostile steps against the runner's side of a sandbox: holding the step's pipes open from
 * outside the job (fds passed to the egress proxy), and flooding the egress proxy.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { systemClock } from "../src/base/clock.ts";
import { runStep } from "../src/sandbox/conformance.ts";
import { CrunSandboxFactory } from "../src/sandbox/oci/crun-sandbox-factory.ts";
import { PROXY_MAX_CONNECTIONS } from "../src/sandbox/oci/egress-proxy.ts";
import { baseSpec, capturingLogger, randomSlot, tempRoot } from "./support/sandbox-harness.ts";

const root = tempRoot("hostile");
// hang.example never resolves: the proxy keeps that client paused while it waits
const factory = new CrunSandboxFactory({
  clock: systemClock,
  logger: capturingLogger(),
  cacheDir: "/var/cache/deltaci",
  resolveHost: (host) => (host === "hang.example" ? new Promise<string[]>(() => {}) : Promise.reject(new Error("no DNS in tests"))),
});
const slot = randomSlot(root);
after(async () => {
  const reaped = await factory.reapSlot(slot);
  execFileSync("rm", ["-rf", root]);
  assert.deepEqual(reaped.filter((r) => !/^cgroup .*slot-\d+$/.test(r)), []);
});

const spec = () => baseSpec(slot, { network: { egress: "allowlist", allow: ["hang.example:443"] } });

void test("a step that parks its stdout in the egress proxy still ends, and the sandbox stays usable", { timeout: 120_000 }, async () => {
  const s = spec();
  const sb = await factory.create(s);
  try {
    const park = join(sb.workspaceOnHost, "park");
    execFileSync("cc", ["-O2", "-static", "-o", park, new URL("./fixtures/park-stdio.c", import.meta.url).pathname]);
    chmodSync(park, 0o755);
    const r = await runStep(sb, "./park; echo script-end");
    assert.match(r.stderr.toString(), /parked stdout and stderr in the proxy/);
    assert.equal(r.stdout.toString(), "script-end\n");
    assert.deepEqual([r.result.exitCode, r.result.signal, r.result.limit], [0, null, null]);
    const next = await runStep(sb, "echo still usable");
    assert.equal(next.stdout.toString(), "still usable\n");
  } finally {
    await sb.dispose();
  }
  assert.deepEqual(await factory.inspectSlot(slot), []);
});

void test("the egress proxy takes a bounded number of connections from a job", { timeout: 120_000 }, async () => {
  const s = spec();
  const sb = await factory.create(s);
  try {
    // open far more connections than the cap, each with an unfinished header; count those the proxy drops at once
    const script = `python3 - <<'PY'
import socket, select
conns = []
for i in range(${PROXY_MAX_CONNECTIONS + 100}):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect("/.deltaci/run/egress.sock")
    c.sendall(b"CONNECT hang.example")
    conns.append(c)
dropped = 0
for c in conns:
    r, _, _ = select.select([c], [], [], 0.05)
    try:
        if r and c.recv(1) == b"":
            dropped += 1
    except ConnectionResetError:
        dropped += 1
print(dropped)
PY`;
    const r = await runStep(sb, script);
    assert.equal(r.result.exitCode, 0, r.stderr.toString());
    assert.ok(Number(r.stdout.toString()) >= 100, `connections beyond the cap are dropped: ${r.stdout.toString()}`);
  } finally {
    await sb.dispose();
  }
  assert.deepEqual(await factory.inspectSlot(slot), []);
});
