/**
 * Streaming secret masker: replaces every secret value, its common encodings (base64 in all
 * three alignments, base64url, URL encoding), each line of a multi-line secret, and Delta CI
 * token-shaped strings with `***` before the bytes go anywhere.
 *
 * Streaming contract: `write(chunk)` returns the bytes that are final; it holds back only the
 * shortest tail that could still be the start of a pattern (so a value split across writes or
 * chunks is still caught, and ordinary output is not delayed). `end()` releases the tail.
 * Patterns shorter than MIN_PATTERN_BYTES are not masked (they would blank ordinary text).
 */
import { TokenPrefix } from "../base/ids.ts";
import { indexOfByRareByte, rarestByteAt } from "./find-bytes.ts";

export const MASK = Buffer.from("***");
export const MIN_PATTERN_BYTES = 3;
/** Encoded fragments (base64 middles) shorter than this are too generic to mask. */
const MIN_DERIVED_BYTES = 6;
const TOKEN_BODY_LEN = 43;
const TOKEN_PREFIXES = Object.values(TokenPrefix).map((p) => Buffer.from(p));
const TOKEN_LEN = (TOKEN_PREFIXES[0]?.length ?? 8) + TOKEN_BODY_LEN;
const D = 0x64; // "d", first byte of every token prefix
/** What every token starts with; a Buffer needle (a string one is encoded again on every search). */
const TOKEN_HEAD = Buffer.from("dci_");

function isTokenChar(b: number): boolean {
  return (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x5f || b === 0x2d;
}

/** The fully determined middle of base64(x) when x sits at byte offset `align` (0..2) of a larger stream. */
function base64Middles(value: Buffer): string[] {
  const out: string[] = [];
  for (let align = 0; align < 3; align++) {
    const padded = Buffer.concat([Buffer.alloc(align), value]);
    const enc = padded.toString("base64").replace(/=+$/, "");
    const from = Math.ceil((8 * align) / 6);
    const to = Math.floor((8 * (align + value.length)) / 6);
    if (to - from > 0) out.push(enc.slice(from, to));
  }
  return out;
}

/** Every byte pattern to mask for one secret value. */
export function patternsFor(value: string): Buffer[] {
  const found = new Set<string>();
  const add = (s: string, min: number) => {
    if (Buffer.byteLength(s) >= min) found.add(s);
  };
  const forms = [value];
  const lines = value.split(/\r?\n/).map((l) => l.trim());
  if (lines.length > 1) forms.push(...lines.filter((l) => l.length > 0));
  for (const [i, form] of forms.entries()) {
    const min = i === 0 ? MIN_PATTERN_BYTES : MIN_DERIVED_BYTES;
    add(form, min);
    add(encodeURIComponent(form), min);
    add(encodeURIComponent(form).replace(/%20/g, "+"), min);
    for (const mid of base64Middles(Buffer.from(form))) {
      add(mid, MIN_DERIVED_BYTES);
      add(mid.replace(/\+/g, "-").replace(/\//g, "_"), MIN_DERIVED_BYTES);
    }
  }
  return [...found].map((s) => Buffer.from(s));
}

interface Match {
  start: number;
  end: number;
}

export class SecretMasker {
  private readonly patterns: Buffer[] = [];
  /** Per pattern, the index of its byte likely rarest in output: each is found by a memchr of that byte (find-bytes.ts). */
  private readonly rareAt: number[] = [];
  private readonly known = new Set<string>();
  /** Every proper prefix of every pattern (latin1), to size the held-back tail. */
  private readonly prefixes = new Set<string>();
  /** First bytes of the patterns: a tail that does not start with one is no prefix (no string made for it). */
  private readonly firstBytes = new Uint8Array(256);
  private maxPrefixLen = TOKEN_LEN - 1;
  private pending: Buffer = Buffer.alloc(0);

  constructor(secretValues: Iterable<string>) {
    for (const v of secretValues) this.add(v);
  }

  /** Masks `value` (and its forms) from now on, in the held-back tail too (`::add-mask::`). */
  add(value: string): void {
    for (const p of patternsFor(value)) {
      const key = p.toString("latin1");
      if (this.known.has(key)) continue;
      this.known.add(key);
      this.patterns.push(p);
      this.rareAt.push(rarestByteAt(p));
      this.firstBytes[p[0] ?? 0] = 1;
      for (let k = 1; k < p.length; k++) this.prefixes.add(p.toString("latin1", 0, k));
      this.maxPrefixLen = Math.max(this.maxPrefixLen, p.length - 1);
    }
  }

  /** Masks a complete text at once (marker lines, messages). */
  maskAll(text: string): string {
    const buf = Buffer.from(text);
    return this.replace(buf, this.findMatches(buf), buf.length).toString();
  }

  /** Feeds a chunk; returns the bytes that are final (masked). */
  write(chunk: Uint8Array): Buffer {
    const data = this.pending.length === 0 ? Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength) : Buffer.concat([this.pending, chunk]);
    const matches = this.findMatches(data);
    let cut = data.length - this.heldTailLength(data);
    for (const m of matches) if (m.start < cut && m.end > cut) cut = m.end;
    const out = this.replace(data, matches.filter((m) => m.start < cut), cut);
    // Copy: `data` may alias the caller's chunk, which may be reused.
    this.pending = Buffer.from(data.subarray(cut));
    return out;
  }

  /** Releases the held-back tail (end of a stream). */
  end(): Buffer {
    const data = this.pending;
    this.pending = Buffer.alloc(0);
    return this.replace(data, this.findMatches(data), data.length);
  }

  get heldBytes(): number {
    return this.pending.length;
  }

  /** Length of the longest suffix of `data` that is a proper prefix of a pattern or a token. */
  private heldTailLength(data: Buffer): number {
    const limit = Math.min(this.maxPrefixLen, data.length);
    let held = 0;
    if (this.prefixes.size > 0) {
      for (let k = limit; k >= 1; k--) {
        if (this.firstBytes[data[data.length - k] ?? 0] === 1 && this.prefixes.has(data.toString("latin1", data.length - k))) {
          held = k;
          break;
        }
      }
    }
    // Token prefixes: a "d" in the last TOKEN_LEN-1 bytes followed by what could start a token.
    const from = Math.max(0, data.length - Math.min(limit, TOKEN_LEN - 1));
    for (let i = data.indexOf(D, from); i !== -1 && data.length - i > held; i = data.indexOf(D, i + 1)) {
      if (this.couldStartToken(data, i)) {
        held = data.length - i;
        break;
      }
    }
    return held;
  }

  private couldStartToken(data: Buffer, at: number): boolean {
    const rest = data.length - at;
    const head = Math.min(rest, 8);
    const ok = TOKEN_PREFIXES.some((p) => data.compare(p, 0, head, at, at + head) === 0);
    if (!ok) return false;
    for (let i = at + 8; i < data.length; i++) if (!isTokenChar(data[i] ?? 0)) return false;
    return true;
  }

  /** Non-overlapping matches, leftmost first, longest at a position. */
  private findMatches(data: Buffer): Match[] {
    const all: Match[] = [];
    this.patterns.forEach((p, n) => {
      const rareAt = this.rareAt[n] ?? 0;
      for (let i = indexOfByRareByte(data, p, rareAt, 0); i !== -1; i = indexOfByRareByte(data, p, rareAt, i + 1)) all.push({ start: i, end: i + p.length });
    });
    // Its "_" is rare in most output: found by memchr (find-bytes.ts).
    for (let i = indexOfByRareByte(data, TOKEN_HEAD, 3, 0); i !== -1; i = indexOfByRareByte(data, TOKEN_HEAD, 3, i + 1)) {
      if (matchTokenAt(data, i)) all.push({ start: i, end: i + TOKEN_LEN });
    }
    if (all.length <= 1) return all;
    all.sort((a, b) => a.start - b.start || b.end - a.end);
    const chosen: Match[] = [];
    let lastEnd = -1;
    for (const m of all) {
      if (m.start >= lastEnd) {
        chosen.push(m);
        lastEnd = m.end;
      } else if (m.end > lastEnd) {
        // Overlapping secrets: extend the masked span so no fragment of either survives.
        const prev = chosen[chosen.length - 1];
        if (prev) prev.end = m.end;
        lastEnd = m.end;
      }
    }
    return chosen;
  }

  private replace(data: Buffer, matches: Match[], upTo: number): Buffer {
    if (matches.length === 0) return upTo === data.length ? data : data.subarray(0, upTo);
    const parts: Buffer[] = [];
    let pos = 0;
    for (const m of matches) {
      parts.push(data.subarray(pos, m.start), MASK);
      pos = m.end;
    }
    parts.push(data.subarray(pos, upTo));
    return Buffer.concat(parts);
  }
}

/**
 * A whole token at `at` (TOKEN_PATTERN), checked on the bytes: no string per candidate, and no
 * RegExp whose last-match state would keep a token-shaped piece of the job's output reachable.
 */
function matchTokenAt(data: Buffer, at: number): boolean {
  if (data.length - at < TOKEN_LEN) return false;
  if (!TOKEN_PREFIXES.some((p) => data.compare(p, 0, p.length, at, at + p.length) === 0)) return false;
  for (let i = at + TOKEN_LEN - TOKEN_BODY_LEN; i < at + TOKEN_LEN; i++) if (!isTokenChar(data[i] ?? 0)) return false;
  return true;
}
