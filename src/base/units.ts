import { DeltaError } from "./errors.ts";

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `250ms`, `2s`, `10m`, `1h30m`, or a bare number of milliseconds. */
export function parseDurationMs(text: string | number): number {
  if (typeof text === "number") return text;
  const t = text.trim();
  if (/^\d+$/.test(t)) return Number(t);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let end = 0;
  for (let m = re.exec(t); m; m = re.exec(t)) {
    total += Number(m[1]) * (DURATION_UNITS[m[2] ?? ""] ?? 0);
    end = re.lastIndex;
  }
  if (end !== t.length || t.length === 0) throw new DeltaError("E_INVALID", `invalid duration "${text}" (expected e.g. 500ms, 2s, 10m, 1h)`);
  return Math.round(total);
}

const SIZE_UNITS: Record<string, number> = {
  "": 1, b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9,
  ki: 1024, kib: 1024, mi: 1024 ** 2, mib: 1024 ** 2, gi: 1024 ** 3, gib: 1024 ** 3,
};

/** Parses `512Mi`, `1Gi`, `64MiB`, `100M`, or a bare number of bytes. */
export function parseSizeBytes(text: string | number): number {
  if (typeof text === "number") return text;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const mult = m ? SIZE_UNITS[(m[2] ?? "").toLowerCase()] : undefined;
  if (!m || mult === undefined) throw new DeltaError("E_INVALID", `invalid size "${text}" (expected e.g. 512Mi, 1Gi, 100M)`);
  return Math.round(Number(m[1]) * mult);
}

export function formatDurationMs(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)}s`;
  return `${Math.floor(ms / 60_000)}m${Math.round((ms % 60_000) / 1000)}s`;
}
