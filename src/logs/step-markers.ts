/**
 * Machine-readable marker lines in a job log (docs/log-format.md). Every marker is one line:
 *
 *   ##[deltaci <nonce>] <kind> <json>
 *
 * The nonce is random per attempt and announced by the log's first line (`log-start`), which the
 * runner writes before any step output. Readers trust only markers carrying that nonce, so a step
 * that prints a look-alike line cannot fake a step boundary.
 */
export const MARKER_PREFIX = "##[deltaci ";
export const LOG_FORMAT_VERSION = 1;

export type MarkerKind = "log-start" | "step-start" | "step-end" | "step-skipped" | "notice" | "job-end";

export interface Marker {
  nonce: string;
  kind: MarkerKind;
  data: Record<string, unknown>;
}

const KINDS = new Set<string>(["log-start", "step-start", "step-end", "step-skipped", "notice", "job-end"]);
const LINE = /^##\[deltaci ([0-9a-f]{16})\] ([a-z-]+) (\{.*\})$/;

/** One marker line, newline included. */
export function formatMarker(nonce: string, kind: MarkerKind, data: Record<string, unknown>): string {
  return `${MARKER_PREFIX}${nonce}] ${kind} ${JSON.stringify(data)}\n`;
}

/** Parses one line (without its newline); null if it is not a marker (or has another nonce when `nonce` is given). */
export function parseMarker(line: string, nonce?: string): Marker | null {
  const m = LINE.exec(line.endsWith("\r") ? line.slice(0, -1) : line);
  if (!m || !KINDS.has(m[2] ?? "")) return null;
  if (nonce !== undefined && m[1] !== nonce) return null;
  try {
    const data = JSON.parse(m[3] ?? "") as unknown;
    if (typeof data !== "object" || data === null || Array.isArray(data)) return null;
    return { nonce: m[1] ?? "", kind: m[2] as MarkerKind, data: data as Record<string, unknown> };
  } catch {
    return null;
  }
}

/** Reads the nonce from a log's first line (`log-start`), or null. */
export function nonceOf(firstLine: string): string | null {
  const m = parseMarker(firstLine);
  return m && m.kind === "log-start" ? m.nonce : null;
}
