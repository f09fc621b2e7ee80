/**
 * OCI images: a Debian image built with debootstrap (scripts/sandbox-build-debian-image.sh, cached
 * under /var/cache/deltaci) runs as a writable overlay; `apt-get install` works as root in the user
 * namespace while the files belong to the slot's unprivileged uids on the host.
 */
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { runStep } from "../src/sandbox/conformance.ts";
import { ociTestEnv } from "./support/sandbox-harness.ts";

const run = promisify(execFile);
const env = ociTestEnv(undefined, { oneSlot: true });
const LAYOUT = "/var/cache/deltaci/images/debian";

/** A tiny package built on the host, installed in the sandbox with apt-get from the workspace. */
function buildDeb(dir: string): string {
  const pkg = join(dir, "pkg");
  mkdirSync(join(pkg, "DEBIAN"), { recursive: true });
  mkdirSync(join(pkg, "usr/bin"), { recursive: true });
  writeFileSync(join(pkg, "DEBIAN/control"), "Package: deltaci-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: Delta CI <ci@example.invalid>\nDescription: test package\n");
  writeFileSync(join(pkg, "usr/bin/deltaci-hello"), "#!/bin/sh\necho hello from a package\n");
  chmodSync(join(pkg, "usr/bin/deltaci-hello"), 0o755);
  const deb = join(dir, "deltaci-hello_1.0_all.deb");
  execFileSync("dpkg-deb", ["--root-owner-group", "--build", pkg, deb], { stdio: "ignore" });
  return deb;
}

void describe("oci images", { timeout: 1_800_000 }, () => {
  let image: { kind: "oci"; ref: string; digest: string };
  let archive: string;

  before(async () => {
    const script = new URL("../scripts/sandbox-build-debian-image.sh", import.meta.url).pathname;
    const res = await run("bash", [script, LAYOUT, "bookworm"], { timeout: 1_500_000, maxBuffer: 16 * 1024 * 1024 });
    const m = /^(\S+) (sha256:[a-f0-9]{64})$/m.exec(res.stdout);
    assert.ok(m?.[1] && m[2], `image builder output: ${res.stdout} ${res.stderr}`);
    image = { kind: "oci", ref: `oci:${m[1]}`, digest: m[2] };
    const dir = join(env.root, "deb");
    mkdirSync(dir);
    buildDeb(dir);
    archive = join(env.root, "src.tar");
    execFileSync("tar", ["-cf", archive, "-C", dir, "deltaci-hello_1.0_all.deb"]);
  });
  after(async () => {
    await env.cleanup();
  });

  void it("runs a Debian image with a writable overlay owned by the slot's uids", async () => {
    const spec = env.spec({ image });
    const sb = await env.factory.create(spec);
    try {
      const r = await runStep(sb, "cat /etc/debian_version; id -u; echo x > /usr/local/bin/new-file; echo $BASH_VERSION | cut -c1");
      assert.equal(r.result.exitCode, 0, r.stderr.toString());
      assert.match(r.stdout.toString(), /^12\.\d+\n0\n5\n$/);
      const upper = join(sb.workspaceOnHost, "..", "upper", "usr/local/bin/new-file");
      assert.equal(statSync(upper).uid, spec.slot.hostUidBase);
    } finally {
      await sb.dispose();
      assert.deepEqual(await env.leftovers(spec), []);
    }
  });

  void it("apt-get installs a package as root in the user namespace; the image stays unchanged", async () => {
    const spec = env.spec({ image, sourceArchive: archive });
    const sb = await env.factory.create(spec);
    try {
      const r = await runStep(sb, "apt-get install -y -q ./deltaci-hello_1.0_all.deb >/dev/null 2>apt.log || { cat apt.log >&2; exit 1; }; deltaci-hello; dpkg -s deltaci-hello | grep Status");
      assert.equal(r.result.exitCode, 0, r.stderr.toString());
      assert.equal(r.stdout.toString(), "hello from a package\nStatus: install ok installed\n");
      const sid = await runStep(sb, "cp /usr/bin/id /usr/local/bin/sid && chmod u+s /usr/local/bin/sid && setpriv --reuid=1000 --regid=1000 --clear-groups /usr/local/bin/sid -u");
      assert.equal(sid.stdout.toString(), "1000\n", "a set-uid binary in the image gives no privileges");
    } finally {
      await sb.dispose();
      assert.deepEqual(await env.leftovers(spec), []);
    }
    const again = env.spec({ image });
    const fresh = await env.factory.create(again);
    try {
      const r = await runStep(fresh, "command -v deltaci-hello || echo absent");
      assert.equal(r.stdout.toString(), "absent\n");
    } finally {
      await fresh.dispose();
    }
  });

  void it("unpacks an image once for every slot, each seeing it through an idmapped mount as its own root", async () => {
    const other = ociTestEnv();
    const a = env.spec({ image });
    const b = other.spec({ image });
    const boxes = [await env.factory.create(a), await other.factory.create(b)];
    try {
      for (const [i, sb] of boxes.entries()) {
        const spec = [a, b][i]!;
        const r = await runStep(sb, "stat -c %u:%g /etc/passwd /usr/bin/passwd; test -u /usr/bin/passwd && echo set-uid");
        assert.equal(r.stdout.toString(), "0:0\n0:0\nset-uid\n", r.stderr.toString());
        const jobDir = join(sb.workspaceOnHost, "..", "..");
        assert.equal(statSync(join(jobDir, "image", "etc", "passwd")).uid, spec.slot.hostUidBase, "the slot sees the image shifted into its range");
      }
      const shared = "/var/cache/deltaci/images/shared";
      assert.equal(statSync(shared).mode & 0o777, 0o700, "the unshifted image (set-uid root binaries) is root's only");
      assert.equal(statSync(join(shared, image.digest.slice(7, 39), "rootfs", "etc", "passwd")).uid, 0);
      const perSlot = existsSync("/var/cache/deltaci/images/unpacked") ? readdirSync("/var/cache/deltaci/images/unpacked") : [];
      assert.deepEqual(perSlot.filter((n) => n.endsWith(`-${a.slot.hostUidBase}`) || n.endsWith(`-${b.slot.hostUidBase}`)), [], "no per-slot copy");
    } finally {
      for (const sb of boxes) await sb.dispose();
      assert.deepEqual([...(await env.leftovers(a)), ...(await other.leftovers(b))], []);
      await other.cleanup();
    }
  });

  void it("runs an image from an OCI archive (copied once into a layout with skopeo)", async () => {
    const tar = join(env.root, "debian.tar");
    await run("skopeo", ["copy", "--quiet", image.ref, `oci-archive:${tar}:bookworm`], { timeout: 600_000 });
    const spec = env.spec({ image: { kind: "oci", ref: `oci-archive:${tar}:bookworm`, digest: image.digest } });
    const sb = await env.factory.create(spec);
    try {
      const r = await runStep(sb, "cat /etc/debian_version");
      assert.match(r.stdout.toString(), /^12\.\d+\n$/, r.stderr.toString());
    } finally {
      await sb.dispose();
      assert.deepEqual(await env.leftovers(spec), []);
    }
    const bad = env.spec({ image: { kind: "oci", ref: `oci-archive:${join(env.root, "src.tar")}`, digest: image.digest } });
    await assert.rejects(env.factory.create(bad), (e: Error & { code?: string }) => e.code === "E_SANDBOX" && /not an OCI archive/.test(e.message));
  });

  void it("refuses local images outside the image roots (also through a symlink) and never echoes a bad index.json", async () => {
    const outside = mkdtempSync(join(tmpdir(), "deltaci-not-a-root-"));
    try {
      writeFileSync(join(outside, "index.json"), "root:secret-looking-bytes\n");
      const link = join(env.root, "link-out");
      symlinkSync(outside, link);
      const inside = join(env.root, "bad-layout");
      mkdirSync(inside);
      writeFileSync(join(inside, "index.json"), "root:secret-looking-bytes\n");
      for (const ref of [`oci:${outside}:x`, `oci:${link}:x`, "oci:/etc:x", `oci:${join(env.root, "missing")}:x`]) {
        const spec = env.spec({ image: { kind: "oci", ref, digest: image.digest } });
        await assert.rejects(env.factory.create(spec), (e: Error & { code?: string }) => e.code === "E_SANDBOX" && /not an image below the runner's image roots/.test(e.message), ref);
        assert.deepEqual(await env.leftovers(spec), []);
      }
      const spec = env.spec({ image: { kind: "oci", ref: `oci:${inside}:x`, digest: image.digest } });
      await assert.rejects(env.factory.create(spec), (e: Error & { code?: string }) => /index\.json is not valid JSON/.test(e.message) && !e.message.includes("secret"));
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }
  });

  void it("refuses a digest that the layout does not list", async () => {
    const spec = env.spec({ image: { ...image, digest: `sha256:${"0".repeat(64)}` } });
    await assert.rejects(env.factory.create(spec), (e: Error & { code?: string }) => e.code === "E_SANDBOX" && /not a tagged manifest/.test(e.message));
    assert.deepEqual(await env.leftovers(spec), []);
  });
});
