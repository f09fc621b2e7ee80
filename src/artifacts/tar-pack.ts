/**
 * Packs collected files into a POSIX (pax) tar file, hashing while writing. Names longer than
 * the ustar field, or not ASCII, get a pax `path` record. Only regular files are written; each
 * is opened with O_NOFOLLOW and must still be a regular file of the size that was collected.
 */
import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import type { CollectedFile } from "./collect.ts";

const BLOCK = 512;

export interface PackedFile {
  size: number;
  sha256: string;
}

function header(name: string, size: number, mode: number, mtimeSec: number, type: "0" | "x"): Buffer {
  const h = Buffer.alloc(BLOCK);
  const put = (s: string, off: number, len: number) => h.write(s, off, len, "utf8");
  const num = (n: number, off: number, len: number) => put(n.toString(8).padStart(len - 1, "0"), off, len - 1);
  put(name, 0, 100);
  num(mode, 100, 8);
  num(0, 108, 8);
  num(0, 116, 8);
  num(size, 124, 12);
  num(mtimeSec, 136, 12);
  h.fill(0x20, 148, 156);
  put(type, 156, 1);
  put("ustar\u000000", 257, 8);
  let sum = 0;
  for (const b of h) sum += b;
  put(sum.toString(8).padStart(6, "0") + "\u0000 ", 148, 8);
  return h;
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
  return `${len}${body}`;
}

/** Writes `files` (relative to `root`) as a tar archive at `dest`. */
export async function packTar(root: string, files: CollectedFile[], dest: string, signal?: AbortSignal): Promise<PackedFile> {
  const out = await open(dest, "w", 0o600);
  const hash = createHash("sha256");
  let size = 0;
  const emit = async (buf: Buffer) => {
    hash.update(buf);
    let off = 0;
    while (off < buf.length) off += (await out.write(buf, off, buf.length - off)).bytesWritten;
    size += buf.length;
  };
  const buf = Buffer.allocUnsafe(1 << 20);
  try {
    for (const f of files) {
      signal?.throwIfAborted();
      const mtime = Math.floor(f.mtimeMs / 1000);
      const ascii = /^[\x20-\x7e]*$/.test(f.path);
      if (Buffer.byteLength(f.path) > 100 || !ascii) {
        const pax = Buffer.from(paxRecord("path", f.path));
        await emit(header("PaxHeader", pax.length, 0o644, mtime, "x"));
        await emit(Buffer.concat([pax, Buffer.alloc((BLOCK - (pax.length % BLOCK)) % BLOCK)]));
      }
      await emit(header(ascii ? f.path.slice(0, 100) : "file", f.size, f.mode, mtime, "0"));
      let fh: FileHandle | null = null;
      try {
        fh = await open(join(root, f.path), constants.O_RDONLY | constants.O_NOFOLLOW);
        const st = await fh.stat();
        if (!st.isFile() || st.size !== f.size) throw new Error(`${f.path} changed while packing`);
        let left = f.size;
        while (left > 0) {
          const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, left), f.size - left);
          if (bytesRead === 0) throw new Error(`${f.path} shrank while packing`);
          await emit(buf.subarray(0, bytesRead));
          left -= bytesRead;
        }
      } finally {
        await fh?.close();
      }
      const pad = (BLOCK - (f.size % BLOCK)) % BLOCK;
      if (pad > 0) await emit(Buffer.alloc(pad));
    }
    await emit(Buffer.alloc(BLOCK * 2));
  } finally {
    await out.close();
  }
  return { size, sha256: hash.digest("hex") };
}

/** Copies a regular file (no link followed) to `dest`, hashing on the way: what is uploaded is what was hashed. */
export async function stageFile(path: string, dest: string, signal?: AbortSignal): Promise<PackedFile> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  const out = await open(dest, "w", 0o600);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new Error(`${path} is not a regular file`);
    const hash = createHash("sha256");
    const buf = Buffer.allocUnsafe(1 << 20);
    let pos = 0;
    for (;;) {
      signal?.throwIfAborted();
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) break;
      const chunk = buf.subarray(0, bytesRead);
      hash.update(chunk);
      let off = 0;
      while (off < chunk.length) off += (await out.write(chunk, off, chunk.length - off)).bytesWritten;
      pos += bytesRead;
    }
    return { size: pos, sha256: hash.digest("hex") };
  } finally {
    await out.close();
    await fh.close();
  }
}
