import assert from "node:assert/strict";
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { after, test } from "node:test";
import { extractSourceArchive } from "./source-archive.ts";

interface Entry {
  name: string;
  type?: string;
  data?: string;
  link?: string;
  mode?: number;
}

function header(e: Entry, size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(e.name, 0, 100, "utf8");
  h.write(((e.mode ?? 0o644).toString(8)).padStart(7, "0") + "\0", 100);
  h.write("0000000\0", 108);
  h.write("0000000\0", 116);
  h.write(size.toString(8).padStart(11, "0") + "\0", 124);
  h.write("00000000000\0", 136);
  h.write("        ", 148);
  h.write(e.type ?? "0", 156);
  h.write(e.link ?? "", 157, 100, "utf8");
  h.write("ustar\0", 257);
  h.write("00", 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
  return h;
}

/** A tar archive built byte by byte, so tests can craft entries `tar` itself would refuse to write. */
function tar(entries: Entry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = Buffer.from(e.data ?? "");
    parts.push(header(e, data.length), data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

const root = mkdtempSync(join(tmpdir(), "deltaci-tar-"));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

async function extract(entries: Entry[], gzip = false): Promise<string> {
  const dir = join(root, `ws-${++n}`);
  const file = join(root, `a-${n}.tar`);
  writeFileSync(file, gzip ? gzipSync(tar(entries)) : tar(entries));
  const { mkdirSync } = await import("node:fs");
  mkdirSync(dir);
  await extractSourceArchive(file, dir, { owner: null });
  return dir;
}

async function rejects(entries: Entry[], pattern: RegExp) {
  await assert.rejects(extract(entries), (e: Error & { code?: string }) => e.code === "E_SOURCE" && pattern.test(e.message));
}

void test("extracts files, directories, in-tree symlinks and hard links; drops set-uid bits", async () => {
  const dir = await extract(
    [
      { name: "src/", type: "5", mode: 0o755 },
      { name: "src/a.txt", data: "hello" },
      { name: "tool", data: "#!/bin/sh\n", mode: 0o4755 },
      { name: "link", type: "2", link: "src/a.txt" },
      { name: "hard", type: "1", link: "src/a.txt" },
    ],
    true,
  );
  assert.equal(readFileSync(join(dir, "src/a.txt"), "utf8"), "hello");
  assert.equal(readlinkSync(join(dir, "link")), "src/a.txt");
  assert.equal(readFileSync(join(dir, "hard"), "utf8"), "hello");
  assert.equal(lstatSync(join(dir, "tool")).mode & 0o7777, 0o755);
});

void test("rejects .. and absolute paths", async () => {
  await rejects([{ name: "../evil", data: "x" }], /"\.\." in path/);
  await rejects([{ name: "a/../../evil", data: "x" }], /"\.\." in path/);
  await rejects([{ name: "/etc/evil", data: "x" }], /absolute path/);
  assert.equal(existsSync(join(root, "evil")), false);
});

void test("rejects device nodes and fifos", async () => {
  await rejects([{ name: "null", type: "3" }], /device node/);
  await rejects([{ name: "disk", type: "4" }], /device node/);
  await rejects([{ name: "fifo", type: "6" }], /fifo/);
});

void test("rejects symlinks that leave the workspace and writes through symlinks", async () => {
  await rejects([{ name: "etc", type: "2", link: "/etc" }], /absolute path/);
  await rejects([{ name: "up", type: "2", link: "../.." }], /leaves the workspace/);
  await rejects([{ name: "a/b", type: "2", link: "../../x" }], /leaves the workspace/);
  // a link to "." makes "dot/../x" look inside but resolve outside: no entry may pass through a symlink
  await rejects(
    [
      { name: "dot", type: "2", link: "." },
      { name: "dot/escape", type: "2", link: "../outside" },
    ],
    /passes through the symlink/,
  );
  await rejects(
    [
      { name: "sub/", type: "5" },
      { name: "ln", type: "2", link: "sub" },
      { name: "ln/file", data: "x" },
    ],
    /passes through the symlink/,
  );
});

void test("rejects hard links to anything but an earlier file in the archive", async () => {
  await rejects([{ name: "shadow", type: "1", link: "/etc/shadow" }], /absolute path/);
  await rejects([{ name: "h", type: "1", link: "../x" }], /"\.\." in path/);
  await rejects([{ name: "h", type: "1", link: "missing" }], /not to an earlier regular file/);
});
