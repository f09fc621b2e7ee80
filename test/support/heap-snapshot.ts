/**
 * Reading a V8 heap snapshot (.heapsnapshot JSON) for leak hunting: the live heap's size (the sum
 * of the nodes' self sizes; the snapshot is taken after a full GC), and node counts by
 * constructor name, so two snapshots can be compared (`growth`).
 */
import { readdir, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";

export interface HeapSummary {
  liveBytes: number;
  nodes: number;
  /** Object count per "type:name" (objects, closures, strings summed as "string"). */
  counts: Map<string, number>;
}

interface RawSnapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

export function summarize(json: string): HeapSummary {
  const s = JSON.parse(json) as RawSnapshot;
  const f = s.snapshot.meta.node_fields;
  const width = f.length;
  const [iType, iName, iSize] = [f.indexOf("type"), f.indexOf("name"), f.indexOf("self_size")];
  const types = s.snapshot.meta.node_types[0];
  const counts = new Map<string, number>();
  let liveBytes = 0;
  for (let i = 0; i < s.nodes.length; i += width) {
    liveBytes += s.nodes[i + iSize] ?? 0;
    const type = types[s.nodes[i + iType] ?? 0] ?? "?";
    const key = type === "object" || type === "closure" ? `${type}:${s.strings[s.nodes[i + iName] ?? 0] ?? "?"}` : type;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return { liveBytes, nodes: s.nodes.length / width, counts };
}

/** The kinds of node whose count grew most from `a` to `b`. */
export function growth(a: HeapSummary, b: HeapSummary, top = 12): Array<{ kind: string; before: number; after: number }> {
  return [...b.counts.entries()]
    .map(([kind, after]) => ({ kind, before: a.counts.get(kind) ?? 0, after }))
    .filter((g) => g.after > g.before)
    .sort((x, y) => y.after - y.before - (x.after - x.before))
    .slice(0, top);
}

/** Sends `pid` SIGUSR2 (it runs with --heapsnapshot-signal=SIGUSR2 --diagnostic-dir=dir) and reads the snapshot once complete; removes it after. */
export async function takeSnapshot(pid: number, dir: string, timeoutMs = 120_000): Promise<string> {
  const before = new Set(await readdir(dir));
  process.kill(pid, "SIGUSR2");
  let lastSize = -1;
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await new Promise((r) => setTimeout(r, 250))) {
    const name = (await readdir(dir)).find((n) => n.endsWith(".heapsnapshot") && !before.has(n));
    if (name === undefined) continue;
    const path = join(dir, name);
    const size = (await stat(path)).size;
    if (size > 0 && size === lastSize) {
      const text = await readFile(path, "latin1");
      if (text.endsWith("]}")) {
        await rm(path);
        return text;
      }
    }
    lastSize = size;
  }
  throw new Error(`no complete heap snapshot in ${dir}`);
}
