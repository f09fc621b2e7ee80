/**
 * Artifact path patterns: a small, strict glob dialect compiled to a RegExp over workspace-relative
 * POSIX paths. `*` and `?` never match `/`; a whole `**` segment matches any number of segments;
 * `[abc]`, `[!a-z]` and `{a,b}` (not nested) work as in a shell. Patterns are relative: absolute
 * paths, `..` segments, backslashes and NUL are refused (they could name something outside).
 */
import { DeltaError } from "../base/errors.ts";

export interface CompiledGlob {
  pattern: string;
  /** Segments before the first wildcard: where a walk can start. */
  base: string;
  /** Matches a relative path (no leading `./`). */
  regex: RegExp;
  /** True when the pattern has no wildcard (names one path). */
  literal: boolean;
}

const WILD = /[*?[{]/;

export function compileGlob(input: string): CompiledGlob {
  const pattern = input.replace(/^(\.\/)+/, "").replace(/\/+$/, "");
  if (pattern.length === 0 || pattern === ".") throw bad(input, "empty");
  if (pattern.startsWith("/")) throw bad(input, "absolute paths are not allowed");
  if (/[\\\0]/.test(pattern)) throw bad(input, "backslash or NUL");
  const segs = pattern.split("/");
  if (segs.some((s) => s === ".." || s === "." || s === "")) throw bad(input, "`..`, `.` and empty segments are not allowed");
  const baseSegs: string[] = [];
  for (const s of segs) {
    if (WILD.test(s)) break;
    baseSegs.push(s);
  }
  const literal = baseSegs.length === segs.length;
  let re = "";
  for (const [i, seg] of segs.entries()) {
    const last = i === segs.length - 1;
    if (seg === "**") re += last ? ".*" : "(?:[^/]+/)*";
    else re += segmentRegex(seg, input) + (last ? "" : "/");
  }
  return { pattern, base: baseSegs.join("/"), regex: new RegExp(`^${re}$`), literal };
}

function segmentRegex(seg: string, input: string): string {
  let out = "";
  for (let i = 0; i < seg.length; i++) {
    const c = seg[i] ?? "";
    if (c === "*") out += "[^/]*";
    else if (c === "?") out += "[^/]";
    else if (c === "[") {
      const end = seg.indexOf("]", i + 2);
      if (end === -1) throw bad(input, "unclosed [");
      let body = seg.slice(i + 1, end);
      const negate = body.startsWith("!") || body.startsWith("^");
      if (negate) body = body.slice(1);
      out += `[${negate ? "^/" : ""}${body.replace(/[\\\]^]/g, "\\$&")}]`;
      i = end;
    } else if (c === "{") {
      const end = seg.indexOf("}", i);
      if (end === -1) throw bad(input, "unclosed {");
      const alts = seg.slice(i + 1, end).split(",");
      if (alts.some((a) => /[{}]/.test(a))) throw bad(input, "nested {} are not supported");
      out += `(?:${alts.map((a) => segmentRegex(a, input)).join("|")})`;
      i = end;
    } else out += c.replace(/[.+^${}()|\]\\]/g, "\\$&");
  }
  return out;
}

function bad(pattern: string, why: string): DeltaError {
  return new DeltaError("E_INVALID", `artifact path ${JSON.stringify(pattern)} rejected: ${why}`);
}
