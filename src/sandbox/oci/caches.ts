/**
 * Caches: a named host directory per (scope, key) under the cache root, bind-mounted at the
 * declared path (read-only when the job may not write it, e.g. a fork's). The directory is
 * handed to the slot's uid range before the job (a chown when another slot used it last).
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { chown, mkdir, stat } from "node:fs/promises";
import { join, posix } from "node:path";
import { promisify } from "node:util";
import { DeltaError } from "../../base/errors.ts";
import type { Cache } from "../../protocol/schemas.ts";
import { bindMount, type OciMount } from "./bundle.ts";

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

export async function prepareCaches(cacheRoot: string, caches: Cache[], workspace: string, uid: number): Promise<{ mounts: OciMount[]; targets: string[] }> {
  const mounts: OciMount[] = [];
  const targets: string[] = [];
  for (const c of caches) {
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
    mounts.push(bindMount(dir, target, c.readOnly));
    targets.push(target);
  }
  return { mounts, targets };
}
