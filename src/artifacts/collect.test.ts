import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { collectFiles } from "./collect.ts";
import { compileGlob } from "./glob.ts";
import { packTar, stageFile } from "./tar-pack.ts";

const root = mkdtempSync(join(tmpdir(), "deltaci-collect-"));
after(() => rmSync(root, { recursive: true, force: true }));
const ws = join(root, "ws");
const outside = join(root, "outside");
mkdirSync(join(ws, "dist/sub/deep"), { recursive: true });
mkdirSync(join(ws, "reports"), { recursive: true });
mkdirSync(outside, { recursive: true });
writeFileSync(join(outside, "secret.txt"), "host secret");
writeFileSync(join(ws, "dist/a.js"), "a");
writeFileSync(join(ws, "dist/b.css"), "b");
writeFileSync(join(ws, "dist/sub/c.js"), "c");
writeFileSync(join(ws, "dist/sub/deep/d.js"), "d");
writeFileSync(join(ws, "reports/junit.xml"), "<x/>");
writeFileSync(join(ws, "dist/" + "n".repeat(120) + ".js"), "long");
symlinkSync(join(outside, "secret.txt"), join(ws, "dist/escape.js"));
symlinkSync(outside, join(ws, "linkdir"));
symlinkSync(outside, join(ws, "dist/sub/linkdir"));

void describe("artifact globs", () => {
  void it("compiles the dialect", () => {
    const m = (p: string, path: string) => compileGlob(p).regex.test(path);
    assert.ok(m("dist/*.js", "dist/a.js"));
    assert.ok(!m("dist/*.js", "dist/sub/c.js"));
    assert.ok(m("dist/**/*.js", "dist/a.js"));
    assert.ok(m("dist/**/*.js", "dist/sub/deep/d.js"));
    assert.ok(m("**/junit.xml", "reports/junit.xml"));
    assert.ok(m("dist/*.{js,css}", "dist/b.css"));
    assert.ok(m("dist/[ab].js", "dist/a.js") && !m("dist/[!ab].js", "dist/a.js"));
    assert.ok(m("./reports/junit.xml", "reports/junit.xml"));
    assert.equal(compileGlob("dist/sub/*.js").base, "dist/sub");
    for (const bad of ["/etc/passwd", "../x", "dist/../../x", "a\\b", ""]) assert.throws(() => compileGlob(bad), /rejected/);
  });

  void it("collects regular files, never through a symbolic link or out of the workspace", async () => {
    const c = await collectFiles(ws, ["dist/**/*.js", "linkdir/*", "linkdir/secret.txt", "../outside/secret.txt", "dist/sub/linkdir/secret.txt"]);
    const paths = c.files.map((f) => f.path);
    assert.deepEqual(paths, ["dist/a.js", "dist/" + "n".repeat(120) + ".js", "dist/sub/c.js", "dist/sub/deep/d.js"]);
    assert.ok(c.skipped.some((s) => s.path === "dist/escape.js" && /symbolic link/.test(s.why)));
    assert.ok(c.skipped.some((s) => s.path === "linkdir"));
    assert.ok(c.skipped.some((s) => s.path === "../outside/secret.txt" && /rejected/.test(s.why)));
    assert.ok(!paths.some((p) => p.includes("secret")));
  });

  void it("a directory pattern takes everything below it", async () => {
    const c = await collectFiles(ws, ["dist/sub"]);
    assert.deepEqual(c.files.map((f) => f.path), ["dist/sub/c.js", "dist/sub/deep/d.js"]);
    assert.equal(c.literal, true);
  });

  void it("packs a tar that tar(1) reads back, with the right sha256", async () => {
    const c = await collectFiles(ws, ["dist/**"]);
    const dest = join(root, "out.tar");
    const packed = await packTar(ws, c.files, dest);
    const bytes = readFileSync(dest);
    assert.equal(packed.size, bytes.length);
    assert.equal(packed.sha256, createHash("sha256").update(bytes).digest("hex"));
    const listed = execFileSync("tar", ["-tf", dest]).toString().trim().split("\n").sort();
    assert.deepEqual(listed, c.files.map((f) => f.path).sort());
    const x = join(root, "x");
    mkdirSync(x);
    execFileSync("tar", ["-xf", dest, "-C", x]);
    assert.equal(readFileSync(join(x, "dist/sub/deep/d.js"), "utf8"), "d");
    assert.equal(readFileSync(join(x, "dist/" + "n".repeat(120) + ".js"), "utf8"), "long");
  });

  void it("stages a single file without following a link", async () => {
    const s = await stageFile(join(ws, "reports/junit.xml"), join(root, "staged"));
    assert.equal(s.sha256, createHash("sha256").update("<x/>").digest("hex"));
    await assert.rejects(stageFile(join(ws, "dist/escape.js"), join(root, "staged2")), /ELOOP/);
  });
});
