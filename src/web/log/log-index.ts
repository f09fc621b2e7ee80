/**
 * A job log held as bytes, indexed by line, for a virtualised view: appends are O(new bytes),
 * only lines that may be markers are decoded, and the rows to show (lines minus hidden marker
 * lines and folded sections) are kept incrementally while the log grows. Steps come only from
 * markers with the log's nonce; group markers (log-groups.ts) fold inside a step and never
 * start or end one.
 */
import { GroupTracker, mayBeGroupMarker } from "../../logs/log-groups.ts";
import { MARKER_PREFIX, nonceOf, parseMarker } from "../../logs/step-markers.ts";

/** What a line is; marker lines of steps' ends, the log start and group ends are Hidden. */
export const LineKind = { Text: 0, Hidden: 1, StepStart: 2, StepSkipped: 3, Notice: 4, JobEnd: 5, GroupStart: 6 } as const;
export type LineKind = (typeof LineKind)[keyof typeof LineKind];

export interface Section {
  kind: "step" | "group";
  /** The header line. */
  line: number;
  /** First line after the section; -1 while it is open. */
  end: number;
  title: string;
  folded: boolean;
  /** Steps: index, and the end marker's fields once it came. */
  index: number;
  result: string | null;
  exitCode: number | null;
  durationMs: number | null;
  /** The enclosing step's section number, for groups. */
  parent: number;
}

const PREFIX = new TextEncoder().encode(MARKER_PREFIX);
const MARKER_MAX_BYTES = 64 * 1024;

class Grow<T extends Uint8Array | Uint32Array | Int32Array> {
  constructor(public a: T, public n = 0, private readonly make: (size: number) => T) {}
  push(v: number): void {
    if (this.n === this.a.length) {
      const b = this.make(this.a.length * 2);
      b.set(this.a);
      this.a = b;
    }
    this.a[this.n++] = v;
  }
}

export class LogIndex {
  private buf = new Uint8Array(1 << 16);
  private len = 0;
  /** Start and end (newline excluded) offsets of each complete line (and of the finished partial one). */
  private readonly starts = new Grow(new Uint32Array(1024), 0, (n) => new Uint32Array(n));
  private readonly ends = new Grow(new Uint32Array(1024), 0, (n) => new Uint32Array(n));
  private readonly kinds = new Grow(new Uint8Array(1024), 0, (n) => new Uint8Array(n));
  /** Section number for header lines (steps, groups, notices reuse -1). */
  private readonly headerOf = new Map<number, number>();
  private rowsBuf = new Grow(new Int32Array(1024), 0, (n) => new Int32Array(n));
  readonly sections: Section[] = [];
  private nonce: string | null = null;
  private openStep = -1;
  private openGroup = -1;
  private readonly groups = new GroupTracker();
  private readonly decoder = new TextDecoder();
  private finished = false;
  /** Bumped on every change that alters rows (for views to re-render). */
  version = 0;

  get bytes(): number {
    return this.len;
  }
  get lineCount(): number {
    return this.starts.n;
  }
  get rowCount(): number {
    return this.rowsBuf.n;
  }
  lineOfRow(row: number): number {
    return this.rowsBuf.a[row] ?? -1;
  }
  kindOf(line: number): LineKind {
    return (this.kinds.a[line] ?? 0) as LineKind;
  }
  sectionAt(line: number): Section | null {
    const s = this.headerOf.get(line);
    return s === undefined ? null : (this.sections[s] ?? null);
  }
  steps(): Section[] {
    return this.sections.filter((s) => s.kind === "step");
  }

  append(chunk: Uint8Array): void {
    if (this.finished) return;
    if (this.len + chunk.length > this.buf.length) {
      let size = this.buf.length;
      while (size < this.len + chunk.length) size *= 2;
      const b = new Uint8Array(size);
      b.set(this.buf.subarray(0, this.len));
      this.buf = b;
    }
    const from = this.len;
    this.buf.set(chunk, from);
    this.len += chunk.length;
    let lineStart = this.pendingStart();
    for (;;) {
      const nl = this.buf.subarray(0, this.len).indexOf(10, Math.max(lineStart, from));
      if (nl < 0) break;
      this.addLine(lineStart, nl);
      lineStart = nl + 1;
    }
    this.version++;
  }

  /** The log ended: a last line without a newline becomes a line too. */
  finish(): void {
    if (this.finished) return;
    const start = this.pendingStart();
    if (start < this.len) this.addLine(start, this.len);
    this.finished = true;
    this.version++;
  }

  /** Text of a line without its newline, at most `maxBytes` (and whether it was cut). */
  lineText(line: number, maxBytes = 8192): { text: string; cut: number } {
    const start = this.starts.a[line] ?? 0;
    let end = this.ends.a[line] ?? start;
    if (end > start && this.buf[end - 1] === 13) end--;
    const cut = Math.max(0, end - start - maxBytes);
    return { text: this.decoder.decode(this.buf.subarray(start, end - cut)), cut };
  }

  fold(section: Section, folded: boolean): void {
    if (section.folded === folded) return;
    section.folded = folded;
    this.rebuildRows();
  }

  /** Row of `line`, unfolding what hides it; -1 when the line is a hidden marker line. */
  reveal(line: number): number {
    let changed = false;
    for (const s of this.sections) {
      if (s.folded && s.line < line && (s.end === -1 || line < s.end)) {
        s.folded = false;
        changed = true;
      }
    }
    if (changed) this.rebuildRows();
    return this.rowOfLine(line);
  }

  rowOfLine(line: number): number {
    let lo = 0;
    let hi = this.rowsBuf.n - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const v = this.rowsBuf.a[mid] ?? 0;
      if (v === line) return mid;
      if (v < line) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /**
   * Lines containing `query` (ASCII case-insensitive), searched as bytes from line `fromLine`
   * on, wrapping; at most `max` hits are counted.
   */
  search(query: string, max = 10_000): number[] {
    const q = new TextEncoder().encode(query.toLowerCase());
    if (q.length === 0) return [];
    const buf = this.buf;
    const end = this.indexedEnd();
    const hits: number[] = [];
    const q0 = q[0] ?? 0;
    let line = 0;
    for (let i = 0; i + q.length <= end; i++) {
      let b = buf[i] ?? 0;
      if (b >= 65 && b <= 90) b += 32;
      if (b !== q0) continue;
      let j = 1;
      for (; j < q.length; j++) {
        let c = buf[i + j] ?? 0;
        if (c >= 65 && c <= 90) c += 32;
        if (c !== q[j]) break;
      }
      if (j < q.length) continue;
      line = this.lineAt(i, line);
      if (this.kindOf(line) !== LineKind.Hidden && hits[hits.length - 1] !== line) {
        hits.push(line);
        if (hits.length >= max) break;
      }
      i = this.ends.a[line] ?? end;
    }
    return hits;
  }

  private lineAt(offset: number, from: number): number {
    let lo = from;
    let hi = this.starts.n - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((this.starts.a[mid] ?? 0) <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** End of the last indexed line. */
  private indexedEnd(): number {
    return this.starts.n > 0 ? (this.ends.a[this.starts.n - 1] ?? 0) : 0;
  }

  /** Where the line not yet indexed starts. */
  private pendingStart(): number {
    return this.starts.n > 0 ? Math.min(this.len, (this.ends.a[this.starts.n - 1] ?? 0) + 1) : 0;
  }

  private addLine(start: number, end: number): void {
    const line = this.starts.n;
    this.starts.push(start);
    this.ends.push(end);
    const kind = this.classify(line, start, end);
    this.kinds.push(kind);
    if (kind !== LineKind.Hidden && this.visibleAtTail(line)) this.rowsBuf.push(line);
  }

  /** A new line is shown unless a folded open section hides it (its own header excepted). */
  private visibleAtTail(line: number): boolean {
    for (const s of [this.openStep, this.openGroup]) {
      const sec = s >= 0 ? this.sections[s] : undefined;
      if (sec && sec.folded && sec.line !== line) return false;
    }
    return true;
  }

  private classify(line: number, start: number, end: number): LineKind {
    const first = this.buf[start] ?? 0;
    if (this.startsWithPrefix(start, end) && end - start <= MARKER_MAX_BYTES) {
      const text = this.decoder.decode(this.buf.subarray(start, end));
      if (line === 0) {
        this.nonce = nonceOf(text);
        if (this.nonce !== null) return LineKind.Hidden;
      } else if (this.nonce !== null) {
        const m = parseMarker(text, this.nonce);
        if (m) return this.onMarker(line, m.kind, m.data);
      }
    }
    if (this.openStep >= 0 && mayBeGroupMarker(first) && end - start <= 1024) {
      const g = this.groups.feed(this.decoder.decode(this.buf.subarray(start, end)));
      if (g && "opened" in g) {
        this.closeGroup(line);
        this.openGroup = this.addSection({ kind: "group", line, title: g.opened.title, folded: g.opened.folded, index: -1, parent: this.openStep });
        return LineKind.GroupStart;
      }
      if (g) {
        this.closeGroup(line + 1);
        return LineKind.Hidden;
      }
    }
    return LineKind.Text;
  }

  private onMarker(line: number, kind: string, d: Record<string, unknown>): LineKind {
    const num = (v: unknown) => (typeof v === "number" ? v : null);
    const str = (v: unknown) => (typeof v === "string" ? v : null);
    switch (kind) {
      case "step-start":
        this.closeStep(line);
        this.openStep = this.addSection({ kind: "step", line, title: str(d.name) ?? "step", folded: false, index: num(d.index) ?? -1, parent: -1 });
        return LineKind.StepStart;
      case "step-end": {
        const s = this.sections[this.openStep];
        if (s && s.index === num(d.index)) {
          s.result = str(d.result);
          s.exitCode = num(d.exitCode);
          s.durationMs = num(d.durationMs);
          this.closeStep(line + 1);
        }
        return LineKind.Hidden;
      }
      case "step-skipped":
        this.closeStep(line);
        this.addSection({ kind: "step", line, title: str(d.name) ?? "step", folded: false, index: num(d.index) ?? -1, parent: -1 }, "skipped", line + 1);
        return LineKind.StepSkipped;
      case "notice":
        return LineKind.Notice;
      case "job-end":
        this.closeStep(line);
        return LineKind.JobEnd;
      default:
        return LineKind.Hidden;
    }
  }

  private addSection(s: Pick<Section, "kind" | "line" | "title" | "folded" | "index" | "parent">, result: string | null = null, end = -1): number {
    this.sections.push({ ...s, end, result, exitCode: null, durationMs: null });
    this.headerOf.set(s.line, this.sections.length - 1);
    return this.sections.length - 1;
  }

  private closeGroup(end: number): void {
    const g = this.sections[this.openGroup];
    if (g && g.end === -1) g.end = end;
    this.openGroup = -1;
  }

  private closeStep(end: number): void {
    this.closeGroup(end);
    this.groups.reset();
    const s = this.sections[this.openStep];
    if (s && s.end === -1) s.end = end;
    this.openStep = -1;
  }

  private startsWithPrefix(start: number, end: number): boolean {
    if (end - start < PREFIX.length) return false;
    for (let i = 0; i < PREFIX.length; i++) if (this.buf[start + i] !== PREFIX[i]) return false;
    return true;
  }

  private rebuildRows(): void {
    const rows = new Grow(new Int32Array(Math.max(1024, this.rowsBuf.a.length)), 0, (n) => new Int32Array(n));
    const n = this.starts.n;
    const headers = this.sections.slice().sort((a, b) => a.line - b.line);
    let h = 0;
    for (let line = 0; line < n; line++) {
      while (h < headers.length && (headers[h]?.line ?? n) < line) h++;
      const sec = headers[h];
      if (this.kinds.a[line] !== LineKind.Hidden) rows.push(line);
      if (sec && sec.line === line && sec.folded) line = (sec.end === -1 ? n : sec.end) - 1;
    }
    this.rowsBuf = rows;
    this.version++;
  }
}
