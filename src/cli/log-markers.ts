/**
 * The runner's marker lines in a job log (docs/log-format.md, src/logs/step-markers.ts) as the
 * CLI shows them. Only markers carrying the nonce announced by the log's first line are
 * trusted, so a step printing a look-alike line cannot fake a step boundary.
 */
import { parseMarker } from "../logs/step-markers.ts";

export type LogMarker =
  | { kind: "log-start"; nonce: string }
  | { kind: "step-start"; index: number; name: string }
  | { kind: "step-end"; index: number; exitCode: number | null; signal: string | null; durationMs: number | null; result: string | null }
  | { kind: "step-skipped"; index: number; name: string; reason: string | null }
  | { kind: "note"; text: string }
  | { kind: "job-end" };

const num = (v: unknown): number | null => (typeof v === "number" ? v : null);
const str = (v: unknown): string | null => (typeof v === "string" ? v : null);

/**
 * The marker on this line, or null for an ordinary output line. `nonce` is the log's nonce
 * (null until the `log-start` line was seen: only a `log-start` is accepted then).
 */
export function parseLogMarker(line: string, nonce: string | null): LogMarker | null {
  const m = parseMarker(line, nonce ?? undefined);
  if (!m) return null;
  if (nonce === null) return m.kind === "log-start" ? { kind: "log-start", nonce: m.nonce } : null;
  const d = m.data;
  const index = num(d.index) ?? -1;
  switch (m.kind) {
    case "log-start":
      return null; // a second log-start is output, not a marker
    case "step-start":
      return index >= 0 ? { kind: "step-start", index, name: str(d.name) ?? `step ${index + 1}` } : null;
    case "step-end":
      return index >= 0 ? { kind: "step-end", index, exitCode: num(d.exitCode), signal: str(d.signal), durationMs: num(d.durationMs), result: str(d.result) } : null;
    case "step-skipped":
      return index >= 0 ? { kind: "step-skipped", index, name: str(d.name) ?? `step ${index + 1}`, reason: str(d.reason) } : null;
    case "notice":
      return { kind: "note", text: str(d.message) ?? "" };
    case "job-end":
      return { kind: "job-end" };
  }
}
