/**
 * Caches: a named host directory per (scope, key) under the cache root, mounted at the declared
 * path (read-only when the job may not write it, e.g. a fork's). The directory is handed to the
 * slot's uid range before the job (a chown when another slot used it last).
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { chown, mkdir, stat } from "node:fs/promises";
import { join, posix } from "node:path";
import { promisify } from "node:util";
import { DeltaError } from "../../base/errors.ts";
import type { Cache } from "../../protocol/schemas.ts";
import type { SandboxLogger } from "../types.ts";
import { bindMount, type OciMount } from "./bundle.ts";
import { containsSecret, mergeUpper } from "./cache-save.ts";
import { mountOverlay } from "./oci-image.ts";

const run = promisify(execFile);
const FORBIDDEN = ["/proc", "/sys", "/dev", "/.deltaci", "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/run"];

export function cacheHostDir(cacheRoot: string, c: Pick<Cache, "scope" | "key">): string {
  const scope = c.scope.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 48);
  const hash = createHash("sha256").update(c.scope).digest("hex").slice(0, 12);
  return join(cacheRoot, `${scope}-${hash}`, c.key);
}

/** Where a cache is mounted in the sandbox: absolute, or relative to the workspace. */
export function cacheTarget(path: string, workspace: string): string {
  const target = posix.resolve(workspace, path);
  if (target === "/" || FORBIDDEN.some((f) => target === f || target.startsWith(f + "/"))) {
    throw new DeltaError("E_SANDBOX", `cache path "${path}" is not allowed`);
  }
  return target;
}

export interface WritableCache {
  key: string;
  dir: string;
  upper: string;
}

/**
 * Mounts for the job's caches: read-only ones are bound directly; writable ones are overlays with
 * their upper dir on the job disk (`<disk>/caches/<i>`), merged back by `saveCaches` after the job.
 */
export async function prepareCaches(cacheRoot: string, caches: Cache[], workspace: string, uid: number, jobDir: string, diskMount: string): Promise<{ mounts: OciMount[]; targets: string[]; writable: WritableCache[] }> {
  const mounts: OciMount[] = [];
  const targets: string[] = [];
  const writable: WritableCache[] = [];
  for (const [i, c] of caches.entries()) {
    const target = cacheTarget(c.path, workspace);
    const dir = cacheHostDir(cacheRoot, c);
    await mkdir(dir, { recursive: true, mode: 0o755 });
    const st = await stat(dir);
    if (st.uid !== uid) {
      await run("chown", ["-R", "--no-dereference", `${uid}:${uid}`, dir], { timeout: 600_000 }).catch((e: unknown) => {
        throw new DeltaError("E_SANDBOX", `cannot hand cache ${c.key} to the slot: ${String(e)}`, { cause: e });
      });
      await chown(dir, uid, uid);
    }
    targets.push(target);
    if (c.readOnly) {
      mounts.push(bindMount(dir, target, true));
      continue;
    }
    const upper = join(diskMount, "caches", String(i), "upper");
    const work = join(diskMount, "caches", String(i), "work");
    await mkdir(upper, { recursive: true, mode: 0o755 });
    await mkdir(work, { recursive: true, mode: 0o755 });
    await chown(upper, uid, uid);
    const merged = join(jobDir, "caches", String(i));
    await mountOverlay(dir, upper, work, merged);
    mounts.push(bindMount(merged, target, false));
    writable.push({ key: c.key, dir, upper });
  }
  return { mounts, targets, writable };
}

/** Merges each writable cache's changes unless they contain a secret value; returns the keys saved. */
export async function saveCaches(writable: WritableCache[], secrets: string[], uid: number, logger: SandboxLogger): Promise<string[]> {
  const saved: string[] = [];
  for (const c of writable) {
    const hit = await containsSecret(c.upper, secrets);
    if (hit !== null) {
      logger.warn({ cache: c.key, file: hit }, "cache not saved: it contains the value of one of the job's secrets");
      continue;
    }
    await mergeUpper(c.upper, c.dir, uid);
    saved.push(c.key);
  }
  return saved;
}
