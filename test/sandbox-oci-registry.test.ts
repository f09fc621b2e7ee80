/**
 * Registry images: a real registry (Debian's `docker-registry`) on loopback holds the Debian test
 * image; jobs name it `127.0.0.1:PORT/debian@sha256:…` and the factory pulls it once per digest
 * with skopeo. Plain HTTP is allowed only for registries listed in `insecureRegistries`.
 */
import assert from "node:assert/strict";
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { systemClock } from "../src/base/clock.ts";
import { JobFileParser, formatIssue } from "../src/jobfile/parse.ts";
import { runStep } from "../src/sandbox/conformance.ts";
import { CrunSandboxFactory } from "../src/sandbox/oci/crun-sandbox-factory.ts";
import { registryLayoutDir, registryRefOf } from "../src/sandbox/oci/registry-pull.ts";
import type { SandboxSpec, SlotInfo } from "../src/sandbox/types.ts";
import { baseSpec, capturingLogger, randomSlot, tempRoot } from "./support/sandbox-harness.ts";

const run = promisify(execFile);
const CACHE = "/var/cache/deltaci";
const LAYOUT = "/var/cache/deltaci/images/debian";
const REGISTRY_BIN = "/usr/bin/docker-registry";

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const addr = srv.address();
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  assert.ok(addr !== null && typeof addr === "object");
  return addr.port;
}

/** Starts the registry and resolves once it logs that it listens (or rejects when it exits). */
function startRegistry(dir: string, port: number): Promise<ChildProcess> {
  const config = join(dir, "config.yml");
  writeFileSync(config, `version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, "data")}\nhttp:\n  addr: 127.0.0.1:${port}\n`);
  const child = spawn(REGISTRY_BIN, ["serve", config], { stdio: ["ignore", "ignore", "pipe"] });
  return new Promise((resolve, reject) => {
    let log = "";
    child.stderr?.on("data", (b: Buffer) => {
      log += b.toString();
      if (log.includes(`listening on 127.0.0.1:${port}`)) resolve(child);
    });
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`docker-registry exited (${code}): ${log}`)));
  });
}

async function stopRegistry(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  process.kill(child.pid, "SIGTERM");
  await exited;
}

function ensureRegistryBinary(): void {
  if (existsSync(REGISTRY_BIN)) return;
  // scripts/setup.sh installs it in CI; locally, install it the same way
  execFileSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", "docker-registry"]);
}

void describe("oci images from a registry", { timeout: 1_800_000 }, () => {
  const root = tempRoot("registry");
  const slots: SlotInfo[] = [];
  let regDir = "";
  let registry: ChildProcess | null = null;
  let host = "";
  let digest = "";
  let secure: CrunSandboxFactory;
  let insecure: CrunSandboxFactory;

  const spec = (ref: string, pin = digest): SandboxSpec => {
    const slot = randomSlot(root);
    slots.push(slot);
    return baseSpec(slot, { image: { kind: "oci", ref, digest: pin } });
  };

  before(async () => {
    ensureRegistryBinary();
    const script = new URL("../scripts/sandbox-build-debian-image.sh", import.meta.url).pathname;
    const res = await run("bash", [script, LAYOUT, "bookworm"], { timeout: 1_500_000, maxBuffer: 16 * 1024 * 1024 });
    const m = /^(\S+) (sha256:[a-f0-9]{64})$/m.exec(res.stdout);
    assert.ok(m?.[1] && m[2], `image builder output: ${res.stdout} ${res.stderr}`);
    regDir = mkdtempSync(join(tmpdir(), "deltaci-registry-"));
    const port = await freePort();
    registry = await startRegistry(regDir, port);
    host = `127.0.0.1:${port}`;
    const digestFile = join(regDir, "pushed-digest");
    await run("skopeo", ["copy", "--quiet", "--dest-tls-verify=false", "--digestfile", digestFile, `oci:${m[1]}`, `docker://${host}/debian:bookworm`], { timeout: 600_000 });
    digest = readFileSync(digestFile, "utf8").trim();
    // a second name, never pulled over TLS-less HTTP, for the TLS test (a cached digest needs no pull)
    await run("skopeo", ["copy", "--quiet", "--dest-tls-verify=false", `oci:${m[1]}`, `docker://${host}/debian-tls:bookworm`], { timeout: 600_000 });
    assert.equal(digest, m[2], "the push keeps the manifest digest");
    const opts = { clock: systemClock, logger: capturingLogger(), cacheDir: CACHE, cacheRoot: join(root, "caches") };
    insecure = new CrunSandboxFactory({ ...opts, insecureRegistries: [host] });
    secure = new CrunSandboxFactory(opts);
  });

  after(async () => {
    try {
      for (const slot of slots) await insecure.reapSlot(slot);
    } finally {
      if (registry !== null) await stopRegistry(registry);
      if (host !== "") {
        const target = registryRefOf(`${host}/debian`);
        if (target !== null) for (const pin of [digest, `sha256:${"0".repeat(64)}`]) rmSync(registryLayoutDir(CACHE, target, pin), { recursive: true, force: true });
      }
      if (regDir !== "") rmSync(regDir, { recursive: true, force: true });
      rmSync(root, { recursive: true, force: true });
    }
  });

  void it("pulls by digest once (two concurrent jobs) and runs the image", async () => {
    const a = spec(`${host}/debian`);
    const b = spec(`docker://${host}/debian:bookworm`);
    const boxes = await Promise.allSettled([insecure.create(a), insecure.create(b)]);
    try {
      for (const r of boxes) {
        assert.equal(r.status, "fulfilled", r.status === "rejected" ? String(r.reason) : "");
        const out = await runStep(r.value, "cat /etc/debian_version");
        assert.match(out.stdout.toString(), /^12\.\d+\n$/, out.stderr.toString());
      }
      const target = registryRefOf(`${host}/debian`);
      assert.ok(target);
      const index = JSON.parse(readFileSync(join(registryLayoutDir(CACHE, target, digest), "index.json"), "utf8")) as { manifests: Array<{ digest: string }> };
      assert.deepEqual(index.manifests.map((x) => x.digest), [digest], "the cached layout holds the pinned manifest");
    } finally {
      for (const r of boxes) if (r.status === "fulfilled") await r.value.dispose();
      assert.deepEqual([...(await insecure.inspectSlot(a.slot)), ...(await insecure.inspectSlot(b.slot))], []);
    }
  });

  void it("resolves a multi-platform image index to this host's manifest", async () => {
    // an OCI index over the test image, pushed with --multi-arch all
    const multi = join(regDir, "multi");
    execFileSync("cp", ["-al", LAYOUT, multi]);
    rmSync(join(multi, "index.json"));
    const arch = process.arch === "x64" ? "amd64" : process.arch;
    const entry = (a: string) => ({ mediaType: "application/vnd.oci.image.manifest.v1+json", digest, size: statSync(join(LAYOUT, "blobs/sha256", digest.slice(7))).size, platform: { architecture: a, os: "linux" } });
    const indexBlob = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [entry("s390x"), entry(arch)] }));
    const indexDigest = `sha256:${createHash("sha256").update(indexBlob).digest("hex")}`;
    writeFileSync(join(multi, "blobs/sha256", indexDigest.slice(7)), indexBlob);
    writeFileSync(join(multi, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.index.v1+json", digest: indexDigest, size: indexBlob.length, annotations: { "org.opencontainers.image.ref.name": "multi" } }] }));
    const digestFile = join(regDir, "multi-digest");
    await run("skopeo", ["copy", "--quiet", "--multi-arch", "all", "--dest-tls-verify=false", "--digestfile", digestFile, `oci:${multi}:multi`, `docker://${host}/debian-multi:latest`], { timeout: 600_000 });
    assert.equal(readFileSync(digestFile, "utf8").trim(), indexDigest);
    const s = spec(`${host}/debian-multi`, indexDigest);
    const sb = await insecure.create(s);
    try {
      const out = await runStep(sb, "cat /etc/debian_version");
      assert.match(out.stdout.toString(), /^12\.\d+\n$/, out.stderr.toString());
    } finally {
      await sb.dispose();
      const target = registryRefOf(`${host}/debian-multi`);
      if (target !== null) rmSync(registryLayoutDir(CACHE, target, indexDigest), { recursive: true, force: true });
    }
    assert.deepEqual(await insecure.inspectSlot(s.slot), []);
  });

  void it("fails with E_SANDBOX naming the image and digest when the registry does not have it", async () => {
    const wrong = `sha256:${"0".repeat(64)}`;
    const s = spec(`${host}/debian`, wrong);
    await assert.rejects(insecure.create(s), (e: Error & { code?: string }) => {
      assert.equal(e.code, "E_SANDBOX");
      assert.ok(e.message.includes(`${host}/debian@${wrong}`), e.message);
      assert.match(e.message, /manifest unknown|not found/i);
      return true;
    });
    assert.deepEqual(await insecure.inspectSlot(s.slot), []);
  });

  void it("refuses plain HTTP from a registry not listed in insecureRegistries", async () => {
    const s = spec(`${host}/debian-tls`);
    await assert.rejects(secure.create(s), (e: Error & { code?: string }) => {
      assert.equal(e.code, "E_SANDBOX");
      assert.ok(e.message.includes(`${host}/debian-tls@${digest}`), e.message);
      assert.match(e.message, /HTTP response to HTTPS client/);
      return true;
    });
  });

  void it("fails with E_SANDBOX naming skopeo's error when the registry is unreachable", async () => {
    const down = `127.0.0.1:${await freePort()}`;
    const s = spec(`${down}/debian`);
    const factory = new CrunSandboxFactory({ clock: systemClock, logger: capturingLogger(), cacheDir: CACHE, cacheRoot: join(root, "caches"), insecureRegistries: [down] });
    await assert.rejects(factory.create(s), (e: Error & { code?: string }) => {
      assert.equal(e.code, "E_SANDBOX");
      assert.ok(e.message.includes(`${down}/debian@${digest}`), e.message);
      assert.match(e.message, /connection refused/i);
      return true;
    });
  });

  void it("bounds a pull by imagePullTimeoutMs (a registry that accepts and never answers)", async () => {
    const sockets = new Set<Socket>();
    const silent = createServer((sock) => sockets.add(sock));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const addr = silent.address();
    assert.ok(addr !== null && typeof addr === "object");
    const hung = `127.0.0.1:${addr.port}`;
    try {
      const s = spec(`${hung}/debian`);
      const factory = new CrunSandboxFactory({ clock: systemClock, logger: capturingLogger(), cacheDir: CACHE, cacheRoot: join(root, "caches"), insecureRegistries: [hung], imagePullTimeoutMs: 2_000 });
      await assert.rejects(factory.create(s), (e: Error & { code?: string }) => {
        assert.equal(e.code, "E_SANDBOX");
        assert.match(e.message, /timed out after 2000 ms/);
        return true;
      });
    } finally {
      for (const sock of sockets) sock.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  void it("job files accept registry references pinned by digest", () => {
    const pin = `sha256:${"b".repeat(64)}`;
    for (const ref of ["debian", "registry.example.org:5000/team/img", `${host}/debian`, "docker://ghcr.io/o/r:tag"]) {
      const r = new JobFileParser().parse(`jobs:\n  a:\n    image: ${ref}@${pin}\n    steps: [{run: x}]\n`, "ci.yml");
      assert.ok(r.ok, r.ok ? "" : r.issues.map(formatIssue).join("\n"));
      assert.deepEqual(r.jobs[0]?.spec.image, { kind: "oci", ref, digest: pin });
    }
  });
});
