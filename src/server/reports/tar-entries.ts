/**
 * The regular files of a tar held in memory (an artifact of several files, as
 * src/artifacts/tar-pack.ts writes it: ustar headers, pax `path` records). Bounded by the
 * buffer; a malformed archive throws, and the caller turns that into a notice.
 */
const BLOCK = 512;

export interface TarEntry {
  name: string;
  data: Buffer;
}

function field(h: Buffer, off: number, len: number): string {
  const raw = h.subarray(off, off + len);
  const end = raw.indexOf(0);
  return raw.subarray(0, end < 0 ? len : end).toString("utf8");
}

function octal(h: Buffer, off: number, len: number): number {
  const s = field(h, off, len).trim();
  if (!/^[0-7]{1,12}$/.test(s)) throw new Error("bad size field in a tar header");
  return parseInt(s, 8);
}

/** `path` from a pax extended header's records (`LEN path=VALUE\n`). */
function paxPath(data: Buffer): string | null {
  let at = 0;
  let path: string | null = null;
  while (at < data.length) {
    const sp = data.indexOf(0x20, at);
    const len = sp < 0 ? NaN : Number(data.subarray(at, sp).toString("ascii"));
    if (!Number.isInteger(len) || len <= 0 || at + len > data.length) throw new Error("bad pax record");
    const rec = data.subarray(sp + 1, at + len - 1).toString("utf8");
    if (rec.startsWith("path=")) path = rec.slice(5);
    at += len;
  }
  return path;
}

export function tarEntries(tar: Buffer): TarEntry[] {
  const out: TarEntry[] = [];
  let at = 0;
  let nextName: string | null = null;
  while (at + BLOCK <= tar.length) {
    const h = tar.subarray(at, at + BLOCK);
    if (h.every((b) => b === 0)) break;
    const size = octal(h, 124, 12);
    const type = String.fromCharCode(h[156] ?? 0);
    const start = at + BLOCK;
    if (start + size > tar.length) throw new Error("truncated tar entry");
    const data = tar.subarray(start, start + size);
    if (type === "x") {
      nextName = paxPath(data);
    } else {
      if (type === "0" || type === "\0") {
        const prefix = field(h, 345, 155);
        const name = nextName ?? (prefix ? `${prefix}/${field(h, 0, 100)}` : field(h, 0, 100));
        out.push({ name, data });
      }
      nextName = null;
    }
    at = start + Math.ceil(size / BLOCK) * BLOCK;
  }
  return out;
}
