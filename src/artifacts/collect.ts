/**
 * Finds the files an artifact rule names inside a workspace on the host. The walk never follows
 * a symbolic link (links are reported, not read), never leaves the workspace root, and only
 * returns regular files. A pattern matching a directory takes everything below it.
 */
import type { Dirent } from "node:fs";
import { lstat, opendir } from "node:fs/promises";
import { join } from "node:path";
import { compileGlob, type CompiledGlob } from "./glob.ts";

export interface CollectedFile {
  /** Relative POSIX path inside the workspace. */
  path: string;
  size: number;
  mode: number;
  mtimeMs: number;
}

export interface Collection {
  files: CollectedFile[];
  /** Paths skipped, with why (symbolic links, special files, invalid patterns). */
  skipped: Array<{ path: string; why: string }>;
  /** True when every pattern was a plain path (no wildcard). */
  literal: boolean;
}

export async function collectFiles(workspace: string, patterns: string[], opts: { maxFiles?: number } = {}): Promise<Collection> {
  const maxFiles = opts.maxFiles ?? 100_000;
  const found = new Map<string, CollectedFile>();
  const skipped: Collection["skipped"] = [];
  let literal = true;
  for (const raw of patterns) {
    let glob: CompiledGlob;
    try {
      glob = compileGlob(raw);
    } catch (err) {
      skipped.push({ path: raw, why: (err as Error).message });
      continue;
    }
    literal &&= glob.literal;
    // Check every segment of the base without following links.
    const start = await safeBase(workspace, glob.base, skipped);
    if (start === null) continue;
    await walk(workspace, start, glob, false, found, skipped, maxFiles);
  }
  const files = [...found.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { files, skipped, literal };
}

/** The base dir/file of a pattern, if every component is a real directory (no link) inside the workspace. */
async function safeBase(workspace: string, base: string, skipped: Collection["skipped"]): Promise<string | null> {
  if (base === "") return "";
  const segs = base.split("/");
  for (let i = 1; i <= segs.length; i++) {
    const rel = segs.slice(0, i).join("/");
    const st = await lstat(join(workspace, rel)).catch(() => null);
    if (st === null) return null;
    if (st.isSymbolicLink()) {
      skipped.push({ path: rel, why: "symbolic link not followed" });
      return null;
    }
    if (i < segs.length && !st.isDirectory()) return null;
  }
  return base;
}

async function walk(
  workspace: string, rel: string, glob: CompiledGlob, inMatchedDir: boolean,
  found: Map<string, CollectedFile>, skipped: Collection["skipped"], maxFiles: number,
): Promise<void> {
  const abs = rel === "" ? workspace : join(workspace, rel);
  const st = await lstat(abs).catch(() => null);
  if (st === null) return;
  const matched = inMatchedDir || (rel !== "" && glob.regex.test(rel));
  if (st.isSymbolicLink()) {
    if (matched) skipped.push({ path: rel, why: "symbolic link not followed" });
    return;
  }
  if (st.isFile()) {
    if (matched && !found.has(rel)) {
      if (found.size >= maxFiles) throw new Error(`more than ${maxFiles} files matched`);
      found.set(rel, { path: rel, size: st.size, mode: st.mode & 0o777, mtimeMs: st.mtimeMs });
    }
    return;
  }
  if (!st.isDirectory()) {
    if (matched) skipped.push({ path: rel, why: "not a regular file" });
    return;
  }
  const dir = await opendir(abs).catch(() => null);
  if (dir === null) return;
  const names: Dirent[] = [];
  for await (const d of dir) names.push(d);
  for (const d of names) await walk(workspace, rel === "" ? d.name : `${rel}/${d.name}`, glob, matched, found, skipped, maxFiles);
}
