/**
 * A request body as the chunks it arrived in: the log append path slices and writes them as they
 * are, instead of concatenating each body into a fresh buffer (a copy and fresh pages per PUT).
 */
export type ByteParts = readonly Buffer[];

export function partsLength(parts: ByteParts): number {
  let n = 0;
  for (const p of parts) n += p.length;
  return n;
}

/** Bytes `[from, to)` of `parts`, as views (no copy). */
export function sliceParts(parts: ByteParts, from: number, to: number): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (const p of parts) {
    const end = at + p.length;
    if (end > from && at < to) out.push(p.subarray(Math.max(0, from - at), Math.min(p.length, to - at)));
    at = end;
    if (at >= to) break;
  }
  return out;
}
