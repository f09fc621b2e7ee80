/**
 * One log line as styled text spans. SGR colour and style codes are applied; every other
 * escape or control sequence (cursor moves, OSC titles and hyperlinks, DCS, C1 controls) is
 * dropped, so the result is plain text to put in text nodes, never markup.
 */
export interface Span {
  text: string;
  /** Classes for the 16 base colours and styles, e.g. "f1 b". */
  cls: string;
  /** 256-colour and truecolor values, as CSS colours. */
  fg: string | null;
  bg: string | null;
}

interface Pen {
  fg: number | string | null;
  bg: number | string | null;
  bold: boolean;
  dim: boolean;
  italic: boolean;
  underline: boolean;
  inverse: boolean;
}

const RESET: Pen = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false };

// ESC [ … final (CSI); ESC ] … BEL|ST (OSC); ESC P/X/^/_ … ST (DCS, SOS, PM, APC); ESC + one byte;
// C1 CSI/OSC; other C0/C1 controls except tab.
// eslint-disable-next-line no-control-regex
const SEQ = /\x1b\[([0-?]*)([ -/]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\|$)|\x1b[PX^_][^\x1b]*(?:\x1b\\|$)|\x1b[ -/]*[0-~]?|\x9b[0-?]*[ -/]*[@-~]|\x9d[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c|$)|[\x00-\x08\x0a-\x1f\x7f-\x9f]/g;

function cube(n: number): string {
  if (n < 16) return "";
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return `rgb(${v},${v},${v})`;
  }
  const i = n - 16;
  const c = (x: number) => (x === 0 ? 0 : 55 + x * 40);
  return `rgb(${c(Math.floor(i / 36))},${c(Math.floor(i / 6) % 6)},${c(i % 6)})`;
}

function applySgr(pen: Pen, params: string): Pen {
  const p = { ...pen };
  const codes = params === "" ? [0] : params.split(/[;:]/).map((x) => (x === "" ? 0 : Number(x)));
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i] ?? 0;
    if (c === 0) Object.assign(p, RESET);
    else if (c === 1) p.bold = true;
    else if (c === 2) p.dim = true;
    else if (c === 3) p.italic = true;
    else if (c === 4) p.underline = true;
    else if (c === 7) p.inverse = true;
    else if (c === 22) p.bold = p.dim = false;
    else if (c === 23) p.italic = false;
    else if (c === 24) p.underline = false;
    else if (c === 27) p.inverse = false;
    else if (c >= 30 && c <= 37) p.fg = c - 30;
    else if (c >= 90 && c <= 97) p.fg = c - 90 + 8;
    else if (c === 39) p.fg = null;
    else if (c >= 40 && c <= 47) p.bg = c - 40;
    else if (c >= 100 && c <= 107) p.bg = c - 100 + 8;
    else if (c === 49) p.bg = null;
    else if (c === 38 || c === 48) {
      const mode = codes[i + 1];
      let v: number | string | null = null;
      if (mode === 5) {
        const n = codes[i + 2] ?? 0;
        v = n < 16 ? n : cube(Math.min(255, n));
        i += 2;
      } else if (mode === 2) {
        const [r, g, b] = [codes[i + 2] ?? 0, codes[i + 3] ?? 0, codes[i + 4] ?? 0].map((x) => Math.max(0, Math.min(255, x)));
        v = `rgb(${r},${g},${b})`;
        i += 4;
      } else break;
      if (c === 38) p.fg = v;
      else p.bg = v;
    }
  }
  return p;
}

function spanOf(text: string, pen: Pen): Span {
  const fg = pen.inverse ? pen.bg : pen.fg;
  const bg = pen.inverse ? (pen.fg ?? "inv") : pen.bg;
  const cls: string[] = [];
  if (typeof fg === "number") cls.push(`f${fg}`);
  if (typeof bg === "number") cls.push(`g${bg}`);
  if (bg === "inv") cls.push("gi");
  if (pen.bold) cls.push("b");
  if (pen.dim) cls.push("d");
  if (pen.italic) cls.push("i");
  if (pen.underline) cls.push("u");
  return { text, cls: cls.join(" "), fg: typeof fg === "string" ? fg : null, bg: typeof bg === "string" && bg !== "inv" ? bg : null };
}

/** Spans of one line; a carriage return shows only what was written after it (progress bars). */
export function ansiSpans(line: string): Span[] {
  const cr = line.lastIndexOf("\r");
  const visible = cr >= 0 ? line.slice(cr + 1) : line;
  const spans: Span[] = [];
  let pen = RESET;
  let at = 0;
  SEQ.lastIndex = 0;
  for (let m = SEQ.exec(visible); m; m = SEQ.exec(visible)) {
    if (m.index > at) spans.push(spanOf(visible.slice(at, m.index), pen));
    if (m[3] === "m" && m[2] === "") pen = applySgr(pen, m[1] ?? "");
    at = m.index + m[0].length;
    if (m[0].length === 0) SEQ.lastIndex++;
  }
  if (at < visible.length) spans.push(spanOf(visible.slice(at), pen));
  return spans;
}

/** The line as plain text (what search and copy see). */
export function plainText(line: string): string {
  return ansiSpans(line).map((s) => s.text).join("");
}
