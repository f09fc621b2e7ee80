/**
 * Prints a job's log stream for people: whole lines, an optional coloured `job |` prefix when
 * several jobs print at once, and step markers (docs/log-format.md) turned into step headers
 * and result lines with durations. Inside a step, log groups users print for other CI systems
 * (src/logs/log-groups.ts: GitHub, GitLab, Buildkite) become headers with their lines indented.
 * With `fold`, a group that starts folded shows only its header and then a line count; its lines
 * are printed after all when its step fails while it is open (a bounded tail). Without `fold`
 * nothing is hidden. Bytes are untrusted: control sequences are neutralised on a TTY so a job
 * cannot rewrite the terminal.
 */
import { StringDecoder } from "node:string_decoder";
import { formatDurationMs } from "../base/units.ts";
import { defaults } from "../config/defaults.ts";
import { GroupTracker } from "../logs/log-groups.ts";
import { parseLogMarker, type LogMarker } from "./log-markers.ts";
import type { Style } from "./style.ts";

export interface LogPrinterOptions {
  write: (text: string) => void;
  style: Style;
  /** `build | ` before each line, or "" for a single job. */
  prefix: string;
  /** Fold groups that start folded (GitHub's, Buildkite's `---`, GitLab's `[collapsed=true]`). */
  fold?: boolean;
  /** Bytes of a folded group's last lines kept to print if its step fails (default `defaults.logFoldTailBytes`). */
  foldTailBytes?: number;
}

/** A folded group's hidden lines: counted, and the last ones kept. */
interface Folded {
  count: number;
  tail: string[];
  tailBytes: number;
  dropped: number;
}

export class LogPrinter {
  private readonly decoder = new StringDecoder("utf8");
  private partial = "";
  /** The log's marker nonce, from its first line. */
  private nonce: string | null = null;
  private lineNo = 0;
  private inStep = false;
  private readonly groups = new GroupTracker();
  private folded: Folded | null = null;
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
    this.endFold(false);
  }

  private line(raw: string): void {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    const marker = this.lineNo++ === 0 || this.nonce !== null ? parseLogMarker(line, this.nonce) : null;
    if (marker) return this.marker(marker);
    const group = this.inStep ? this.groups.feed(line) : null;
    if (group && "closed" in group) return this.endFold(false);
    const s = this.opts.style;
    const text = s.enabled ? sanitize(line) : line;
    if (group) {
      this.endFold(false);
      const title = s.enabled ? sanitize(group.opened.title) : group.opened.title;
      const fold = this.opts.fold === true && group.opened.folded;
      if (fold) this.folded = { count: 0, tail: [], tailBytes: 0, dropped: 0 };
      return this.opts.write(`${this.opts.prefix}${s.bold(`${this.opts.fold === true && !fold ? "▾" : "▸"} ${title}`)}\n`);
    }
    if (this.folded) return this.hide(text);
    const indent = this.groups.isOpen ? "  " : "";
    this.opts.write(`${this.opts.prefix}${indent}${text}\n`);
  }

  private hide(text: string): void {
    const f = this.folded!;
    f.count++;
    f.tail.push(text);
    f.tailBytes += text.length + 1;
    const max = this.opts.foldTailBytes ?? defaults.logFoldTailBytes;
    while (f.tailBytes > max && f.tail.length > 1) {
      f.tailBytes -= (f.tail.shift() ?? "").length + 1;
      f.dropped++;
    }
  }

  /** Ends a folded group: its line count, or (its step failed) its kept lines. */
  private endFold(expand: boolean): void {
    const f = this.folded;
    if (!f) return;
    this.folded = null;
    const s = this.opts.style;
    const p = this.opts.prefix;
    if (!expand) {
      if (f.count > 0) this.opts.write(`${p}  ${s.dim(`(${f.count} line${f.count === 1 ? "" : "s"} folded)`)}\n`);
      return;
    }
    if (f.dropped > 0) this.opts.write(`${p}  ${s.dim(`(${f.dropped} earlier line${f.dropped === 1 ? "" : "s"} not kept; \`deltaci logs --no-fold\` prints all)`)}\n`);
    for (const t of f.tail) this.opts.write(`${p}  ${t}\n`);
  }

  private marker(m: LogMarker): void {
    const s = this.opts.style;
    if (m.kind === "log-start") {
      this.nonce = m.nonce;
      return;
    }
    if (m.kind !== "note") {
      // Groups live inside one step: every step boundary ends the open one. A step that failed
      // inside a folded group shows what the group hid.
      const failed = m.kind === "step-end" && !(m.exitCode === 0 && (m.result === null || m.result === "succeeded"));
      this.endFold(failed);
      this.groups.reset();
      this.inStep = m.kind === "step-start";
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
