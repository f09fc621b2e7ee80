/**
 * Nothing of a session outlives it in the runner host's memory, proven on a heap snapshot of a
 * real `deltaci runner-host` process (oci). A job with a secret S and an env value V runs in one
 * session; the host reaches the server through a recording TCP proxy, so the test knows the
 * session's registration token, session token and lease token. Once the session ended (and the
 * slot's next sandbox was prewarmed), the host writes a heap snapshot on SIGUSR2
 * (`--heapsnapshot-signal`, which collects garbage first); the file must hold none of S (raw or
 * base64), V or the tokens. A positive control keeps the test honest: the host's own id, random
 * and alive for the host's life, must be found in the same file by the same search.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, randomInt } from "node:crypto";
import { chmod, mkdir, readdir, readFile } from "node:fs/promises";
import { createServer, connect, type AddressInfo, type Socket } from "node:net";
import { join } from "node:path";
import { startHarness } from "./controller-harness.ts";
import { takeSnapshot } from "./support/heap-snapshot.ts";
import { reapHostSlots, registrationTokens, startHostClient } from "./support/host-client.ts";
import { crunIds } from "./support/leftovers.ts";

/** A loopback TCP proxy that keeps every byte the server sent (its JSON answers carry the tokens). */
async function recordingProxy(target: string): Promise<{ url: string; received: () => string; close: () => Promise<void> }> {
  const down: Buffer[] = [];
  const sockets = new Set<Socket>();
  const t = new URL(target);
  const server = createServer((client) => {
    const up = connect(Number(t.port), t.hostname);
    for (const s of [client, up]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(up);
    up.on("data", (c: Buffer) => down.push(Buffer.from(c)));
    up.pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    received: () => Buffer.concat(down).toString("latin1"),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const field = (text: string, name: string): string => {
  const m = new RegExp(`"${name}":"([^"]+)"`).exec(text);
  if (!m?.[1]) throw new Error(`the server sent no ${name}`);
  return m[1];
};

void test("runner host heap: after a session ends, no trace of its secret, env value or tokens is left", { timeout: 300_000 }, async (t) => {
  const h = await startHarness();
  // undone last first: the host's slots are reaped before the temp dir goes
  const undo: Array<() => Promise<unknown>> = [() => h.cleanup()];
  t.after(async () => {
    for (const u of undo.reverse()) await u().catch(() => {});
  });
  await chmod(h.dir, 0o711);
  await mkdir(h.workRoot, { recursive: true, mode: 0o711 });
  const snapDir = join(h.dir, "heap");
  await mkdir(snapDir);
  const proxy = await recordingProxy(h.server.url);
  undo.push(() => proxy.close());
  const hostId = `host-${randomBytes(10).toString("hex")}`;
  const slot = randomInt(30_000, 50_000);
  const host = await startHostClient({
    dir: h.dir, workRoot: h.workRoot, slotBase: slot, slots: 1, isolation: "oci", hostId,
    env: { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${snapDir}`.trim() },
  });
  undo.push(async () => {
    await host.kill();
    await reapHostSlots({ workRoot: h.workRoot, slotBase: slot, slots: 1, isolation: "oci" });
  });

  const secret = `S${randomBytes(16).toString("hex")}`;
  const envValue = `V${randomBytes(16).toString("hex")}`;
  const res = await h.api.call<{ jobId: string }>({
    method: "POST", path: "/v1/jobs", token: h.server.apiToken,
    json: {
      spec: {
        name: "heap", runsOn: { labels: [] }, image: { kind: "host" }, env: { PLAIN: envValue },
        steps: [{ name: "use", run: 'echo "secret: $TOP_SECRET"; echo "plain: $PLAIN"; printf %s "$TOP_SECRET" | base64; echo "$TOP_SECRET" > /workspace/s' }],
        limits: { timeoutMs: 120_000, cpus: 1, memoryMiB: 256, diskMiB: 256, pids: 256, logMiB: 8 },
        network: { egress: "none" }, source: { kind: "none" }, caches: [], artifacts: [],
      },
      fork: false, secrets: { TOP_SECRET: secret },
    },
  });
  const jobId = res.body.jobId;
  const [regToken] = await registrationTokens(h.server.url, h.server.controllerToken, 1);
  const exit = await host.session("s-heap", regToken as string, proxy.url);
  assert.equal(exit.code, 0, exit.reason);
  const job = await h.job(jobId);
  assert.equal(job.state, "succeeded", JSON.stringify(job.failure));
  const sent = proxy.received();
  const traces: Record<string, string> = {
    secret, "secret (base64)": Buffer.from(secret).toString("base64").replace(/=+$/, ""), "env value": envValue,
    "registration token": regToken as string, "session token": field(sent, "sessionToken"), "lease token": field(sent, "leaseToken"),
  };
  assert.ok(sent.includes(secret), "the secret crossed the wire to the host (the job used it)");

  // The slot's next sandbox is prewarmed once the session ended: a snapshot taken after it is built.
  await h.waitFor("the slot's prewarmed sandbox", () => crunIds(`deltaci-s${slot}-`).length > 0, 60_000);
  const tracesIn = (snapshot: string) => Object.entries(traces).filter(([, v]) => snapshot.includes(v)).map(([k]) => k);
  let text = await takeSnapshot(host.pid, snapDir);
  assert.ok(text.includes(hostId), "positive control: the host's own id, alive for its life, is found in the snapshot");
  let found = tracesIn(text);
  if (found.length > 0) {
    // Seen once in a loaded CI run (the secret only), never in 13 runs here: work of the ended
    // session still in flight when the snapshot came. What outlives the host's settling is a leak.
    t.diagnostic(`first snapshot, right after the prewarm, still held: ${found.join(", ")}; retaking it once the host settled`);
    await new Promise((r) => setTimeout(r, 3_000));
    text = await takeSnapshot(host.pid, snapDir);
    found = tracesIn(text);
  }
  assert.deepEqual(found, [], `the host's heap still holds, after the session ended: ${found.join(", ")}`);

  // Nor on disk below the host's work root (spool, step scripts, env files, the remembered warm shape).
  const onDisk: string[] = [];
  for (const f of await readdir(h.workRoot, { recursive: true, withFileTypes: true })) {
    if (!f.isFile()) continue;
    const path = join(f.parentPath ?? f.path, f.name);
    const body = await readFile(path, "latin1").catch(() => "");
    for (const [k, v] of Object.entries(traces)) if (body.includes(v)) onDisk.push(`${k} in ${path}`);
  }
  assert.deepEqual(onDisk, [], "nothing of the session is left in files below the work root");
  await host.stop();
});
