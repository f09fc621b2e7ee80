/**
 * Safe extraction of a source archive (tar, optionally gzip) into an empty workspace. Rejected
 * with E_SOURCE: absolute paths, `..` components, device nodes and fifos, symlinks whose target
 * leaves the workspace, hard links to anything but an earlier regular file, and any entry whose
 * parent path passes through a symlink (so a link to `.` cannot turn `a/../x` into an escape).
 * Set-uid/set-gid bits are dropped; owners are set to `owner` (the sandbox's root on the host).
 */
import { createReadStream } from "node:fs";
import { chmod, lchown, link, lstat, mkdir, open, readdir, symlink } from "node:fs/promises";
import { createRequire } from "node:module";
import { posix } from "node:path";
import { DeltaError } from "../base/errors.ts";

/**
 * Built-ins loaded on first need: a runner host that never extracts a gzip keeps node:zlib out of
 * its RSS. Not `import()`: the bundles run from a V8 code cache, where a dynamic import fails.
 */
const lazyRequire = createRequire(import.meta.url);

export interface ExtractOptions {
  /** Host uid/gid to own every entry, or null to keep the extracting process's. */
  owner: { uid: number; gid: number } | null;
  maxEntries?: number;
}

/** Reads exact byte counts from an async chunk source. */
class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  private readonly it: AsyncIterator<Buffer>;
  constructor(source: AsyncIterable<Buffer>) {
    this.it = source[Symbol.asyncIterator]();
  }
  async read(n: number): Promise<Buffer | null> {
    while (this.buf.length < n) {
      const next = await this.it.next();
      if (next.done) return null;
      this.buf = this.buf.length === 0 ? next.value : Buffer.concat([this.buf, next.value]);
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
  /** Streams `n` bytes to `sink` chunk by chunk. */
  async pipe(n: number, sink: (chunk: Buffer) => Promise<void>): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.buf.length === 0) {
        const next = await this.it.next();
        if (next.done) throw bad("archive truncated");
        this.buf = next.value;
      }
      const take = Math.min(left, this.buf.length);
      await sink(this.buf.subarray(0, take));
      this.buf = this.buf.subarray(take);
      left -= take;
    }
  }
}

const bad = (msg: string) => new DeltaError("E_SOURCE", `source archive rejected: ${msg}`);

function field(h: Buffer, off: number, len: number): string {
  const raw = h.subarray(off, off + len);
  const end = raw.indexOf(0);
  return raw.subarray(0, end === -1 ? len : end).toString("utf8");
}

function octal(h: Buffer, off: number, len: number): number {
  if ((h[off] ?? 0) & 0x80) {
    let v = 0;
    for (let i = off + 1; i < off + len; i++) v = v * 256 + (h[i] ?? 0);
    return v;
  }
  const s = field(h, off, len).trim();
  return s === "" ? 0 : parseInt(s, 8);
}

function parsePax(data: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = 0;
  while (pos < data.length) {
    const sp = data.indexOf(0x20, pos);
    if (sp === -1) break;
    const len = parseInt(data.subarray(pos, sp).toString("ascii"), 10);
    if (!Number.isFinite(len) || len <= 0) break;
    const rec = data.subarray(sp + 1, pos + len - 1).toString("utf8");
    const eq = rec.indexOf("=");
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    pos += len;
  }
  return out;
}

/** Normalizes an entry name to a relative path inside the root, or throws. */
export function safeRelative(name: string): string {
  if (name.startsWith("/")) throw bad(`absolute path "${name}"`);
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw bad(`".." in path "${name}"`);
  if (name.includes("\0")) throw bad("NUL in path");
  return parts.join("/");
}

async function assertNoSymlinkParents(root: string, rel: string): Promise<void> {
  const parts = rel.split("/").slice(0, -1);
  let cur = root;
  for (const p of parts) {
    cur = posix.join(cur, p);
    const st = await lstat(cur).catch(() => null);
    if (st === null) return;
    if (st.isSymbolicLink()) throw bad(`"${rel}" passes through the symlink "${p}"`);
    if (!st.isDirectory()) throw bad(`"${rel}" has a non-directory parent`);
  }
}

const ceil512 = (n: number) => Math.ceil(n / 512) * 512;

export async function extractSourceArchive(archivePath: string, root: string, opts: ExtractOptions): Promise<void> {
  const head = Buffer.alloc(2);
  const fh = await open(archivePath, "r").catch((e: unknown) => {
    throw new DeltaError("E_SOURCE", `cannot open source archive: ${String(e)}`, { cause: e });
  });
  await fh.read(head, 0, 2, 0).finally(() => fh.close());
  const gunzip = head[0] === 0x1f && head[1] === 0x8b ? (lazyRequire("node:zlib") as typeof import("node:zlib")).createGunzip() : null;
  const raw = createReadStream(archivePath);
  const source = gunzip === null ? raw : raw.pipe(gunzip);
  try {
    await extractStream(new ByteReader(source as AsyncIterable<Buffer>), root, opts);
  } catch (e) {
    if (e instanceof DeltaError) throw e;
    throw new DeltaError("E_SOURCE", `source archive unreadable: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  } finally {
    raw.destroy();
  }
}

async function extractStream(r: ByteReader, root: string, opts: ExtractOptions): Promise<void> {
  const maxEntries = opts.maxEntries ?? 1_000_000;
  let longName: string | null = null;
  let longLink: string | null = null;
  let pax: Record<string, string> = {};
  let entries = 0;
  const dirModes: Array<[string, number]> = [];
  for (;;) {
    const h = await r.read(512);
    if (h === null || h.every((b) => b === 0)) break;
    if (++entries > maxEntries) throw bad(`more than ${maxEntries} entries`);
    const type = String.fromCharCode(h[156] ?? 0x30);
    const size = pax.size !== undefined ? Number(pax.size) : octal(h, 124, 12);
    if (type === "L" || type === "K" || type === "x" || type === "g") {
      const data = await r.read(ceil512(size));
      if (data === null) throw bad("archive truncated");
      const body = data.subarray(0, size);
      if (type === "L") longName = field(body, 0, body.length);
      else if (type === "K") longLink = field(body, 0, body.length);
      else if (type === "x") pax = parsePax(body);
      continue;
    }
    const prefix = field(h, 345, 155);
    const name = longName ?? pax.path ?? (prefix ? `${prefix}/${field(h, 0, 100)}` : field(h, 0, 100));
    const linkName = longLink ?? pax.linkpath ?? field(h, 157, 100);
    longName = longLink = null;
    pax = {};
    const mode = octal(h, 100, 8) & 0o1777;
    const rel = safeRelative(name);
    const dest = posix.join(root, rel);
    if (rel !== "") await assertNoSymlinkParents(root, rel);
    switch (type) {
      case "0":
      case "\0":
      case "7": {
        if (rel === "") throw bad("file entry without a name");
        const existing = await lstat(dest).catch(() => null);
        if (existing && !existing.isFile()) throw bad(`"${rel}" replaces a non-file`);
        await mkdir(posix.dirname(dest), { recursive: true });
        const out = await open(dest, "w", 0o600);
        try {
          await r.pipe(size, async (chunk) => {
            await out.write(chunk);
          });
        } finally {
          await out.close();
        }
        await r.read(ceil512(size) - size);
        await chmod(dest, mode & 0o777);
        break;
      }
      case "5": {
        const st = await lstat(dest).catch(() => null);
        if (st && !st.isDirectory()) throw bad(`"${rel}" replaces a non-directory`);
        await mkdir(dest, { recursive: true });
        dirModes.push([dest, (mode & 0o1777) | 0o700]);
        await r.read(ceil512(size));
        break;
      }
      case "2": {
        if (linkName.startsWith("/")) throw bad(`symlink "${rel}" points to the absolute path "${linkName}"`);
        const target = posix.normalize(posix.join(posix.dirname(rel), linkName));
        if (target === ".." || target.startsWith("../")) throw bad(`symlink "${rel}" -> "${linkName}" leaves the workspace`);
        if (await lstat(dest).catch(() => null)) throw bad(`"${rel}" already exists`);
        await mkdir(posix.dirname(dest), { recursive: true });
        await symlink(linkName, dest);
        break;
      }
      case "1": {
        const targetRel = safeRelative(linkName);
        await assertNoSymlinkParents(root, targetRel);
        const st = await lstat(posix.join(root, targetRel)).catch(() => null);
        if (!st?.isFile()) throw bad(`hard link "${rel}" -> "${linkName}" is not to an earlier regular file`);
        if (await lstat(dest).catch(() => null)) throw bad(`"${rel}" already exists`);
        await mkdir(posix.dirname(dest), { recursive: true });
        await link(posix.join(root, targetRel), dest);
        break;
      }
      case "3":
      case "4":
        throw bad(`device node "${rel}"`);
      case "6":
        throw bad(`fifo "${rel}"`);
      default:
        throw bad(`unsupported entry type "${type}" for "${rel}"`);
    }
  }
  for (const [dir, m] of dirModes.reverse()) await chmod(dir, m);
  if (opts.owner) await chownTree(root, opts.owner.uid, opts.owner.gid);
}

async function chownTree(root: string, uid: number, gid: number): Promise<void> {
  await lchown(root, uid, gid);
  const names = await readdir(root, { recursive: true });
  for (const name of names) await lchown(posix.join(root, name), uid, gid);
}
