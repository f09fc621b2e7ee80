/**
 * The runner's step markers in a job log (docs/log-format.md): lines the runner writes between
 * steps so the CLI (and a UI) can fold steps and show their results.
 */
export type LogMarker =
  | { kind: "step-start"; index: number; name: string }
  | { kind: "step-end"; index: number; exitCode: number | null; signal: string | null; durationMs: number | null }
  | { kind: "note"; text: string };

const PREFIX = "##[deltaci] ";

/** The marker on this line, or null for an ordinary output line. */
export function parseLogMarker(line: string): LogMarker | null {
  if (!line.startsWith(PREFIX)) return null;
  let data: Record<string, unknown>;
  try {
    data = JSON.parse(line.slice(PREFIX.length)) as Record<string, unknown>;
  } catch {
    return null;
  }
  const index = typeof data.step === "number" ? data.step : -1;
  if (data.event === "step-start" && index >= 0) return { kind: "step-start", index, name: typeof data.name === "string" ? data.name : `step ${index + 1}` };
  if (data.event === "step-end" && index >= 0) {
    return {
      kind: "step-end", index,
      exitCode: typeof data.exitCode === "number" ? data.exitCode : null,
      signal: typeof data.signal === "string" ? data.signal : null,
      durationMs: typeof data.durationMs === "number" ? data.durationMs : null,
    };
  }
  if (typeof data.message === "string") return { kind: "note", text: data.message };
  return null;
}
