/** Maps a path inside the parsed YAML back to its node, for `file:line:column` in every error. */
import { isMap, isSeq, isScalar, isPair, type Document, type LineCounter, type Node } from "yaml";

export type PathSegment = string | number;

export interface Position {
  line: number;
  column: number;
}

/** The node at `path` (or the deepest existing ancestor), and the key node of its last segment when it is a map key. */
export function findNode(doc: Document, path: readonly PathSegment[]): { node: Node | null; keyNode: Node | null; exact: boolean } {
  let node: Node | null = (doc.contents) ?? null;
  let keyNode: Node | null = null;
  for (const seg of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && (isScalar(p.key) ? String(p.key.value) : String(p.key)) === String(seg));
      if (!pair) return { node, keyNode: null, exact: false };
      keyNode = (pair.key as Node | null) ?? null;
      node = (pair.value as Node | null) ?? keyNode;
    } else if (isSeq(node)) {
      const item = node.items[Number(seg)] as Node | undefined;
      if (!item) return { node, keyNode: null, exact: false };
      keyNode = null;
      node = item;
    } else {
      return { node, keyNode: null, exact: false };
    }
  }
  return { node, keyNode, exact: true };
}

/** The key node of `key` in the map at `path` (for unknown-key errors), else the map itself. */
export function findKey(doc: Document, path: readonly PathSegment[], key: string): Node | null {
  const { node } = findNode(doc, path);
  if (isMap(node)) {
    const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === key);
    if (pair) return pair.key as Node;
  }
  return node;
}

export function positionOf(node: Node | null, lines: LineCounter): Position {
  const offset = node?.range?.[0] ?? 0;
  const { line, col } = lines.linePos(offset);
  return { line, column: col };
}

/** `jobs.build.steps[0].run` from path segments. */
export function formatPath(path: readonly PathSegment[]): string {
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else if (/^[A-Za-z0-9_-]+$/.test(seg)) out += out ? `.${seg}` : seg;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out || "(file)";
}

/** Splits an ajv instancePath (a JSON pointer) into segments; digits become numbers only under sequences. */
export function pointerToPath(pointer: string, data: unknown): PathSegment[] {
  if (pointer === "") return [];
  const out: PathSegment[] = [];
  let cur: unknown = data;
  for (const raw of pointer.slice(1).split("/")) {
    const seg = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    if (Array.isArray(cur)) {
      out.push(Number(seg));
      cur = cur[Number(seg)];
    } else {
      out.push(seg);
      cur = cur !== null && typeof cur === "object" ? (cur as Record<string, unknown>)[seg] : undefined;
    }
  }
  return out;
}
