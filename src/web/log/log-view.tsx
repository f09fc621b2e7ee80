/**
 * The live log: streams the attempt's bytes from the server (from an offset, following while
 * the job runs) into a LogIndex and renders only the rows in view. Text goes into text nodes
 * only (never markup); step and group sections fold; `#L<n>` links to a line.
 */
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { ansiSpans, type Span } from "./ansi.ts";
import { LineKind, LogIndex, type Section } from "./log-index.ts";
import { duration } from "../format.ts";

const ROW_PX = 20;
const OVERSCAN = 30;
const RETRY_MS = 2000;
/** Browsers cap an element's height (a few million px): past this the scrollbar maps onto rows proportionally. */
const MAX_SPACE_PX = 4_000_000;

/** The scroll geometry: real scrollTop ⇄ virtual offset in a rows×ROW_PX tall list. */
function geometry(rowCount: number, height: number) {
  const total = rowCount * ROW_PX;
  const space = Math.min(total, MAX_SPACE_PX);
  const maxReal = Math.max(1, space - height);
  const maxVirtual = Math.max(0, total - height);
  const scaled = total > space;
  return {
    space,
    toVirtual: (real: number) => (scaled ? (Math.min(real, maxReal) / maxReal) * maxVirtual : real),
    toReal: (virtual: number) => (scaled ? (Math.min(virtual, maxVirtual) / Math.max(1, maxVirtual)) * maxReal : virtual),
  };
}

export interface LogViewProps {
  jobId: string;
  attempt: number;
  /** The job can still write to this attempt's log. */
  live: boolean;
  onSteps?: (steps: Section[]) => void;
}

function SpanView({ s }: { s: Span }) {
  if (!s.cls && !s.fg && !s.bg) return <>{s.text}</>;
  const style = s.fg || s.bg ? { color: s.fg ?? undefined, backgroundColor: s.bg ?? undefined } : undefined;
  return <span class={s.cls || undefined} style={style}>{s.text}</span>;
}

function markerField(text: string, field: string): string {
  const i = text.indexOf("{");
  try {
    const v = (JSON.parse(text.slice(i)) as Record<string, unknown>)[field];
    if (v === undefined || v === null) return "";
    return typeof v === "string" ? v : JSON.stringify(v);
  } catch {
    return "";
  }
}

export function LogView(props: LogViewProps) {
  const ix = useMemo(() => new LogIndex(), [props.jobId, props.attempt]);
  const scroller = useRef<HTMLDivElement>(null);
  const [, setVersion] = useState(0);
  const [scrollTop, setScrollTop] = useState(0);
  const [height, setHeight] = useState(600);
  const [follow, setFollow] = useState(true);
  const [done, setDone] = useState(false);
  const [query, setQuery] = useState("");
  const [hits, setHits] = useState<{ q: string; lines: number[]; at: number } | null>(null);
  const [target, setTarget] = useState<number | null>(null);
  const followRef = useRef(follow);
  followRef.current = follow;
  /** Where following last scrolled to: a scroll event at or below it is ours, not the reader's. */
  const autoTop = useRef(-1);
  const liveRef = useRef(props.live);
  liveRef.current = props.live;

  // Stream the log: one follow request from the current offset; again after a drop while the job lives.
  useEffect(() => {
    const ac = new AbortController();
    let frame = 0;
    const redraw = () => {
      if (frame) return;
      frame = requestAnimationFrame(() => {
        frame = 0;
        setVersion(ix.version);
        props.onSteps?.(ix.steps());
      });
    };
    const run = async () => {
      for (;;) {
        try {
          const r = await fetch(`/web/api/jobs/${props.jobId}/log?attempt=${props.attempt}&offset=${ix.bytes}&follow=1`, { credentials: "same-origin", signal: ac.signal });
          if (r.status === 401) return location.assign("/login");
          if (!r.ok || !r.body) throw new Error(`log: HTTP ${r.status}`);
          const reader = r.body.getReader();
          for (let c = await reader.read(); !c.done; c = await reader.read()) {
            ix.append(c.value);
            redraw();
          }
        } catch {
          if (ac.signal.aborted) return;
        }
        if (!liveRef.current) break;
        await new Promise((res) => setTimeout(res, RETRY_MS));
        if (ac.signal.aborted) return;
      }
      ix.finish();
      setDone(true);
      redraw();
    };
    void run();
    return () => {
      ac.abort();
      cancelAnimationFrame(frame);
    };
  }, [ix]);

  // Keep the view's height; follow the tail.
  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const ro = new ResizeObserver(() => setHeight(el.clientHeight));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  useEffect(() => {
    const el = scroller.current;
    if (el && follow && target === null) {
      el.scrollTop = el.scrollHeight;
      autoTop.current = el.scrollTop;
    }
  });

  // `#L<n>` in the address: show that line.
  useEffect(() => {
    const go = () => {
      const m = /^#L(\d+)$/.exec(location.hash);
      if (!m) return;
      setHits(null);
      setTarget(Number(m[1]) - 1);
    };
    go();
    window.addEventListener("hashchange", go);
    return () => window.removeEventListener("hashchange", go);
  }, []);
  useEffect(() => {
    if (target === null || target >= ix.lineCount) return;
    const row = ix.reveal(target);
    const el = scroller.current;
    if (row >= 0 && el) {
      setFollow(false);
      el.scrollTop = geometry(ix.rowCount, el.clientHeight).toReal(Math.max(0, row * ROW_PX - el.clientHeight / 3));
    }
  }, [target, ix.lineCount > (target ?? Infinity)]);

  const onScroll = () => {
    const el = scroller.current;
    if (!el) return;
    setScrollTop(el.scrollTop);
    const atBottom = el.scrollTop + el.clientHeight >= el.scrollHeight - ROW_PX * 2;
    // The log may have grown since following scrolled: only moving up from there stops following.
    if (followRef.current && !atBottom && el.scrollTop >= autoTop.current - 1) return;
    if (followRef.current !== atBottom) setFollow(atBottom);
  };

  const find = (dir: 1 | -1) => {
    const q = query.trim();
    if (!q) return setHits(null);
    const h = hits && hits.q === q ? hits : { q, lines: ix.search(q), at: dir === 1 ? -1 : 0 };
    if (h.lines.length === 0) return setHits({ ...h, at: -1 });
    const at = (h.at + dir + h.lines.length) % h.lines.length;
    setHits({ ...h, at });
    setTarget(h.lines[at] ?? null);
  };

  const toggle = (s: Section) => {
    ix.fold(s, !s.folded);
    setVersion(ix.version);
  };

  const geo = geometry(ix.rowCount, height);
  const virtualTop = geo.toVirtual(scrollTop);
  const first = Math.max(0, Math.floor(virtualTop / ROW_PX) - OVERSCAN);
  const last = Math.min(ix.rowCount, Math.ceil((virtualTop + height) / ROW_PX) + OVERSCAN);
  const hitLine = hits && hits.at >= 0 ? hits.lines[hits.at] : target;
  const rows = [];
  for (let r = first; r < last; r++) {
    const line = ix.lineOfRow(r);
    const kind = ix.kindOf(line);
    const { text, cut } = ix.lineText(line);
    const sec = ix.sectionAt(line);
    const ln = <a class="ln" href={`#L${line + 1}`} aria-label={`line ${line + 1}`}>{line + 1}</a>;
    const cls = `row${line === hitLine ? " hit" : ""}`;
    const style = { top: `${Math.round(scrollTop + r * ROW_PX - virtualTop)}px` };
    if ((kind === LineKind.StepStart || kind === LineKind.GroupStart) && sec) {
      const open = sec.end === -1 && !done;
      const status = sec.kind === "step" ? (sec.result ?? (open ? "running" : "")) : "";
      rows.push(
        <div class={`${cls} head ${sec.kind}`} style={style} data-line={line + 1}>
          {ln}
          <button type="button" class="fold" aria-expanded={!sec.folded} onClick={() => toggle(sec)}>
            <span aria-hidden="true">{sec.folded ? "▸" : "▾"}</span> {sec.title}
          </button>
          {status && <span class={`state s-${status}`}>{status}</span>}
          {sec.exitCode !== null && <span class="sub">exit {sec.exitCode}</span>}
          {sec.durationMs !== null && <span class="sub">{duration(sec.durationMs)}</span>}
        </div>,
      );
      continue;
    }
    let body;
    if (kind === LineKind.StepSkipped) body = <span class="note">{sec?.title ?? "step"} skipped: {markerField(text, "reason")}</span>;
    else if (kind === LineKind.Notice) body = <span class="note">{markerField(text, "message")}</span>;
    else if (kind === LineKind.JobEnd) body = <span class="note">job {markerField(text, "result")}{markerField(text, "failure") ? `: ${markerField(text, "failure")}` : ""}</span>;
    else body = <span class="tx">{ansiSpans(text).map((s) => <SpanView s={s} />)}{cut > 0 && <span class="sub"> … {cut} more bytes</span>}</span>;
    rows.push(<div class={cls} style={style} data-line={line + 1}>{ln}{body}</div>);
  }

  const base = `/web/api/jobs/${props.jobId}/log?attempt=${props.attempt}`;
  return (
    <section class="log" aria-labelledby="log-h">
      <div class="log-bar">
        <h2 id="log-h">Log <span class="sub">attempt {props.attempt} · {ix.lineCount.toLocaleString()} lines{done ? "" : " · following"}</span></h2>
        <form role="search" onSubmit={(e) => { e.preventDefault(); find(1); }}>
          <label for="log-search" class="visually-hidden">Search the log</label>
          <input id="log-search" type="search" placeholder="Search the log" value={query} onInput={(e) => setQuery((e.target as HTMLInputElement).value)}
            onKeyDown={(e) => { if (e.key === "Enter" && e.shiftKey) { e.preventDefault(); find(-1); } }} />
          <button type="submit">Find</button>
          <span class="sub" aria-live="polite">{hits ? (hits.lines.length ? `${hits.at + 1} / ${hits.lines.length}` : "no match") : ""}</span>
        </form>
        <label class="follow"><input type="checkbox" checked={follow} onChange={(e) => { setTarget(null); setFollow((e.target as HTMLInputElement).checked); }} /> Follow</label>
        <a href={`${base}&download=1`} download>Download raw log</a>
      </div>
      <div class="log-view" ref={scroller} onScroll={onScroll} tabIndex={0} role="region" aria-label="Log lines">
        <div class="log-space" style={{ height: `${geo.space}px` }}>{rows}</div>
      </div>
    </section>
  );
}
