/**
 * Saving writable caches: during the job a writable cache is an overlay (the cache dir below, an
 * upper dir on the job disk above), so nothing reaches the shared cache until the job is over.
 * After it, the upper dir is scanned for the job's secret values (raw and base64); a cache that
 * contains one is not saved. Otherwise the changes are merged into the cache dir (whiteouts
 * delete; files, links and dirs are copied, owned by the slot's uid).
 */
import { createReadStream } from "node:fs";
import { copyFile, lchown, lstat, mkdir, readdir, readlink, rm, symlink, chmod } from "node:fs/promises";
import { join } from "node:path";

async function fileContains(path: string, needles: Buffer[]): Promise<boolean> {
  const keep = Math.max(0, ...needles.map((n) => n.length)) - 1;
  let tail: Buffer = Buffer.alloc(0);
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
    const buf = tail.length ? Buffer.concat([tail, chunk]) : chunk;
    if (needles.some((n) => buf.includes(n))) return true;
    tail = keep > 0 ? buf.subarray(Math.max(0, buf.length - keep)) : Buffer.alloc(0);
  }
  return false;
}

/** True when a file below `dir` contains one of the secrets (raw or base64). */
export async function containsSecret(dir: string, secrets: string[]): Promise<string | null> {
  const needles = secrets.filter((s) => s.length >= 4).flatMap((s) => [Buffer.from(s), Buffer.from(Buffer.from(s).toString("base64").replace(/=+$/, ""))]);
  if (needles.length === 0) return null;
  for (const name of await readdir(dir, { recursive: true }).catch(() => [] as string[])) {
    const p = join(dir, name);
    const st = await lstat(p).catch(() => null);
    if (st?.isFile() && (await fileContains(p, needles))) return name;
    if (st?.isSymbolicLink() && needles.some((n) => Buffer.from(name).includes(n))) return name;
  }
  return null;
}

/** Applies an overlay upper dir to the lower dir it was mounted over. */
export async function mergeUpper(upper: string, lower: string, uid: number): Promise<void> {
  for (const e of await readdir(upper, { withFileTypes: true })) {
    const from = join(upper, e.name);
    const to = join(lower, e.name);
    const st = await lstat(from);
    if (st.isCharacterDevice() && st.rdev === 0) {
      await rm(to, { recursive: true, force: true });
    } else if (st.isDirectory()) {
      const existing = await lstat(to).catch(() => null);
      if (existing && !existing.isDirectory()) await rm(to, { recursive: true, force: true });
      await mkdir(to, { recursive: true });
      await chmod(to, st.mode & 0o7777);
      await lchown(to, uid, uid);
      await mergeUpper(from, to, uid);
    } else if (st.isSymbolicLink()) {
      await rm(to, { recursive: true, force: true });
      await symlink(await readlink(from), to);
      await lchown(to, uid, uid);
    } else if (st.isFile()) {
      const existing = await lstat(to).catch(() => null);
      if (existing && !existing.isFile()) await rm(to, { recursive: true, force: true });
      await copyFile(from, to);
      await chmod(to, st.mode & 0o777);
      await lchown(to, uid, uid);
    }
  }
}
