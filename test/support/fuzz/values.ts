/** fast-check arbitraries for hostile values: strings with NUL and unicode, extreme numbers, mutated JSON. */
import fc from "fast-check";

/** Strings that have broken parsers: NUL, lone surrogates, RTL marks, traversal, very long. */
export const evilString: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 40 }),
  fc.constantFrom("", "\u0000", "a\u0000b", "\uFEFF", "\uD800", "\uDFFF\uD800", "\u202Eevil", "😀".repeat(64), "../../etc/passwd", "%00", "%2e%2e%2f",
    "__proto__", "constructor", "' OR 1=1 --", "${x}", "\r\nX-Injected: 1", "x".repeat(70_000), "ü".repeat(300), " ", "\t\n"),
);

/** Numbers at and past every bound: negative, fractional, past 2^53, past double range when written as text. */
export const evilNumber: fc.Arbitrary<number> = fc.oneof(
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.constantFrom(-1, 0, 1, 0.5, -0.5, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, -(2 ** 63), 1e21, 1e308, -1e308, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER),
);

/** Any JSON value, hostile leaves included. */
export const evilValue: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: evilString, weight: 3 },
  { arbitrary: evilNumber, weight: 3 },
  { arbitrary: fc.constantFrom(null, true, false, [], {}, [[[]]], { __proto__: null }), weight: 1 },
  { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 2 },
);

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Every path into `v` (the root is []). */
function paths(v: unknown, at: Array<string | number> = []): Array<Array<string | number>> {
  const out: Array<Array<string | number>> = [at];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...paths(x, [...at, i])));
  else if (v !== null && typeof v === "object") for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...at, k]));
  return out;
}

function setAt(root: Json, path: Array<string | number>, f: (parent: Record<string, unknown> | unknown[], key: string | number) => void): Json {
  const copy = structuredClone(root);
  if (path.length === 0) return copy;
  let cur: unknown = copy;
  for (const k of path.slice(0, -1)) cur = (cur as Record<string | number, unknown>)[k];
  f(cur as Record<string, unknown>, path[path.length - 1] as string | number);
  return copy;
}

type Edit = { kind: "replace"; value: unknown } | { kind: "delete" } | { kind: "add"; key: string; value: unknown } | { kind: "root"; value: unknown };
const edit: fc.Arbitrary<Edit> = fc.oneof(
  { arbitrary: evilValue.map((value) => ({ kind: "replace" as const, value })), weight: 6 },
  { arbitrary: fc.constant({ kind: "delete" as const }), weight: 2 },
  { arbitrary: fc.tuple(fc.oneof(evilString, fc.constantFrom("__proto__", "constructor", "extra")), evilValue).map(([key, value]) => ({ kind: "add" as const, key, value })), weight: 2 },
  { arbitrary: evilValue.map((value) => ({ kind: "root" as const, value })), weight: 1 },
);

/** `base` after 1–3 edits at random paths: wrong types, missing and unknown fields, extreme values. */
export function mutatedJson(base: Json): fc.Arbitrary<unknown> {
  return fc.array(fc.tuple(fc.nat(), edit), { minLength: 1, maxLength: 3 }).map((edits) => {
    let v: Json = base;
    for (const [pick, e] of edits) {
      if (e.kind === "root") return e.value;
      const all = paths(v);
      const path = all[pick % all.length] ?? [];
      v = setAt(v, path, (parent, key) => {
        if (e.kind === "replace") (parent as Record<string | number, unknown>)[key] = e.value;
        else if (e.kind === "delete") {
          if (Array.isArray(parent)) parent.splice(Number(key), 1);
          else delete parent[key as string];
        } else {
          const target = (parent as Record<string | number, unknown>)[key];
          if (target !== null && typeof target === "object" && !Array.isArray(target)) Object.defineProperty(target, e.key, { value: e.value, enumerable: true, writable: true, configurable: true });
        }
      });
    }
    return v;
  });
}

/** Bytes that are not the JSON they claim: truncated, deeply nested, huge number literals, duplicate keys. */
export function malformedJson(base: Json): fc.Arbitrary<string> {
  const text = JSON.stringify(base);
  return fc.oneof(
    fc.nat({ max: Math.max(text.length - 1, 0) }).map((n) => text.slice(0, n)),
    fc.integer({ min: 1, max: 50_000 }).map((n) => "[".repeat(n) + "]".repeat(n)),
    fc.integer({ min: 1, max: 50_000 }).map((n) => '{"a":'.repeat(n) + "1" + "}".repeat(n)),
    fc.constantFrom("1e400", "-1e400", "123456789012345678901234567890", "-0", "NaN", "Infinity", "undefined", "nul", "{", "}", "[", "\"", "'{}'", "{,}", "{\"a\":1,}"),
    fc.string({ unit: "binary", maxLength: 200 }),
    fc.constant(text.replace(/\d+/, "1e400")),
    fc.constant(text.replace(/^\{/, '{"__proto__":{"polluted":1},')),
    fc.constant(text.replace(/^\{/, '{"constructor":{"prototype":{"polluted":1}},')),
    fc.constant(`${text.slice(0, -1)},${text.slice(1)}`),
  );
}

/** A query value: numbers in every spelling, and hostile strings. */
export const queryValue: fc.Arbitrary<string> = fc.oneof(
  fc.nat().map(String),
  fc.constantFrom("-1", "1e3", "99999999999999999999", "", "NaN", "0x10", "1.5", "0", "1", "true", "queued", "running"),
  evilString,
);

/** Percent-encodes the UTF-8 bytes of `s` (lone surrogates become U+FFFD, where encodeURIComponent throws). */
export function pctEncode(s: string): string {
  return [...Buffer.from(s, "utf8")].map((b) => (/[A-Za-z0-9._~-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, "0")}`)).join("");
}
