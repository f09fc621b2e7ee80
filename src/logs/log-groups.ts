/**
 * Log group markers users already print for other CI systems (docs/log-format.md#groups):
 *
 *   GitHub     ::group::NAME  …  ::endgroup::                      (folded)
 *   GitLab     section_start:TS:ID[collapsed=true]\r\e[0KNAME  …  section_end:TS:ID
 *                                                                   (open unless collapsed=true)
 *   Buildkite  --- NAME (folded), +++ NAME (open), ~~~ NAME (folded); a group lasts until the next
 *
 * Groups are flat and live inside one step: a new group ends the open one, and a step's end
 * ends its group. They are display hints only: step boundaries come from nonce-bound markers
 * (step-markers.ts), so no group line can start, end or fake a step.
 */
export type GroupStyle = "github" | "gitlab" | "buildkite";

export type GroupMarker =
  | { kind: "start"; style: GroupStyle; title: string; folded: boolean; id: string | null }
  | { kind: "end"; style: GroupStyle; id: string | null };

const GITHUB_START = /^::group::(.*)$/;
const GITHUB_END = /^::endgroup::\s*$/;
/* eslint-disable no-control-regex -- GitLab's markers carry ESC [ 0 K */
const GITLAB_START = /^(?:\x1b\[0K)?section_start:(\d{1,20}):([A-Za-z0-9_.-]{1,200})(?:\[([^\]]{0,200})\])?(?:\r(?:\x1b\[0K)?(.*))?$/;
const GITLAB_END = /^(?:\x1b\[0K)?section_end:(\d{1,20}):([A-Za-z0-9_.-]{1,200})\r?(?:\x1b\[0K)?$/;
/* eslint-enable no-control-regex */
const BUILDKITE = /^(---|\+\+\+|~~~) (.*)$/;
/** Only lines this short are looked at (a group header is a title, not output). */
export const GROUP_LINE_MAX = 1024;

/** The group marker on a line (without its newline), or null. */
export function parseGroupMarker(line: string): GroupMarker | null {
  if (line.length > GROUP_LINE_MAX) return null;
  const l = line.endsWith("\r") && !line.startsWith("\x1b[0Ksection") && !line.startsWith("section") ? line.slice(0, -1) : line;
  let m = GITHUB_START.exec(l);
  if (m) return { kind: "start", style: "github", title: (m[1] ?? "").trim() || "group", folded: true, id: null };
  if (GITHUB_END.test(l)) return { kind: "end", style: "github", id: null };
  m = GITLAB_START.exec(l);
  if (m) {
    const folded = /(?:^|,)\s*collapsed\s*=\s*true\s*(?:,|$)/.test(m[3] ?? "");
    return { kind: "start", style: "gitlab", title: (m[4] ?? "").trim() || (m[2] ?? "section"), folded, id: m[2] ?? null };
  }
  m = GITLAB_END.exec(l);
  if (m) return { kind: "end", style: "gitlab", id: m[2] ?? null };
  m = BUILDKITE.exec(l);
  if (m) return { kind: "start", style: "buildkite", title: (m[2] ?? "").trim() || "group", folded: m[1] !== "+++", id: null };
  return null;
}

/** True when a line could be a group marker (cheap check on its first byte, before decoding). */
export function mayBeGroupMarker(firstByte: number): boolean {
  // ':' (GitHub), 's' / ESC (GitLab), '-' '+' '~' (Buildkite)
  return firstByte === 0x3a || firstByte === 0x73 || firstByte === 0x1b || firstByte === 0x2d || firstByte === 0x2b || firstByte === 0x7e;
}

/** Tracks the open group of one step; feed it every output line of the step, in order. */
export class GroupTracker {
  private open: { style: GroupStyle; id: string | null } | null = null;

  /** What `line` does: opens a group (closing any open one), closes it, or nothing. */
  feed(line: string): { opened: GroupMarker & { kind: "start" }; closedPrevious: boolean } | { closed: true } | null {
    const g = parseGroupMarker(line);
    if (!g) return null;
    if (g.kind === "start") {
      const closedPrevious = this.open !== null;
      this.open = { style: g.style, id: g.id };
      return { opened: g, closedPrevious };
    }
    if (!this.open) return null;
    if (g.style === "gitlab" && this.open.style === "gitlab" && g.id !== this.open.id) return null;
    this.open = null;
    return { closed: true };
  }

  get isOpen(): boolean {
    return this.open !== null;
  }

  /** The step ended: any open group ends with it. */
  reset(): boolean {
    const was = this.open !== null;
    this.open = null;
    return was;
  }
}
