/**
 * Prints a job's log stream for people: whole lines, an optional coloured `job |` prefix when
 * several jobs print at once, and step markers (docs/log-format.md) turned into step headers
 * and result lines with durations. Bytes are untrusted: control sequences are neutralised on a
 * TTY so a job cannot rewrite the terminal.
 */
import { StringDecoder } from "node:string_decoder";
import { formatDurationMs } from "../base/units.ts";
import { parseLogMarker, type LogMarker } from "./log-markers.ts";
import type { Style } from "./style.ts";

export interface LogPrinterOptions {
  write: (text: string) => void;
  style: Style;
  /** `build | ` before each line, or "" for a single job. */
  prefix: string;
}

export class LogPrinter {
  private readonly decoder = new StringDecoder("utf8");
  private partial = "";
  /** The log's marker nonce, from its first line. */
  private nonce: string | null = null;
  private lineNo = 0;
  private readonly opts: LogPrinterOptions;
  /** Steps seen so far, for the summary. */
  readonly steps: Array<{ index: number; name: string; exitCode: number | null; durationMs: number | null }> = [];

  constructor(opts: LogPrinterOptions) {
    this.opts = opts;
  }

  push(chunk: Buffer): void {
    const text = this.partial + this.decoder.write(chunk);
    const lines = text.split("\n");
    this.partial = lines.pop() ?? "";
    for (const line of lines) this.line(line);
  }

  /** Flushes a last line without a newline. */
  end(): void {
    const rest = this.partial + this.decoder.end();
    this.partial = "";
    if (rest.length > 0) this.line(rest);
  }

  private line(raw: string): void {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    const marker = this.lineNo++ === 0 || this.nonce !== null ? parseLogMarker(line, this.nonce) : null;
    if (marker) return this.marker(marker);
    this.opts.write(`${this.opts.prefix}${this.opts.style.enabled ? sanitize(line) : line}\n`);
  }

  private marker(m: LogMarker): void {
    const s = this.opts.style;
    if (m.kind === "log-start") {
      this.nonce = m.nonce;
      return;
    }
    if (m.kind === "job-end") return;
    if (m.kind === "step-skipped") {
      this.steps.push({ index: m.index, name: m.name, exitCode: null, durationMs: null });
      this.opts.write(`${this.opts.prefix}${s.dim(`– ${m.name} (skipped${m.reason ? `: ${m.reason}` : ""})`)}\n`);
      return;
    }
    if (m.kind === "step-start") {
      this.steps.push({ index: m.index, name: m.name, exitCode: null, durationMs: null });
      this.opts.write(`${this.opts.prefix}${s.bold(s.blue(`▶ ${m.name}`))}\n`);
      return;
    }
    if (m.kind === "step-end") {
      const step = this.steps.find((x) => x.index === m.index);
      if (step) {
        step.exitCode = m.exitCode;
        step.durationMs = m.durationMs;
      }
      const name = step?.name ?? `step ${m.index + 1}`;
      const took = m.durationMs === null ? "" : ` ${s.dim(`(${formatDurationMs(m.durationMs)})`)}`;
      const ok = m.exitCode === 0 && (m.result === null || m.result === "succeeded");
      const why = m.result && m.result !== "failed" && m.result !== "succeeded" ? ` (${m.result})` : "";
      const how = ok ? s.green("✓") : s.red(`✗ ${m.exitCode !== null ? `exit ${m.exitCode}` : m.signal ? `signal ${m.signal}` : "ended"}${why}`);
      this.opts.write(`${this.opts.prefix}${how} ${ok ? name : s.red(name)}${took}\n`);
      return;
    }
    this.opts.write(`${this.opts.prefix}${s.yellow(`! ${m.text}`)}\n`);
  }
}

/**
 * Keeps colour (SGR) sequences but neutralises every other control character and escape
 * (cursor moves, title changes, OSC links) so a job's output cannot drive the terminal.
 */
function sanitize(line: string): string {
  // eslint-disable-next-line no-control-regex
  return line.replace(/\x1b\[[0-9;]{0,32}m|[\x00-\x08\x0b-\x1f\x7f]/g, (c) => (c.length > 1 ? c : c === "\x1b" ? "^[" : "?"));
}
