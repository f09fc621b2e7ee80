/**
 * Small C helpers built once per content hash into the cache dir: the container's pid 1 and step
 * wrapper (static, so it runs in any image), the seccomp BPF exporter (libseccomp) and the disk tool.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, readFile, rename } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { DeltaError } from "../../base/errors.ts";
import { projectRoot } from "../../config/paths.ts";

const run = promisify(execFile);

export interface NativeTool {
  /** Directory holding only this binary (bind-mounted read-only into containers). */
  dir: string;
  path: string;
}

async function build(cacheDir: string, name: string, source: string, flags: string[]): Promise<NativeTool> {
  const nativeDir = join(projectRoot(), "src", "sandbox", "oci", "native");
  const src = join(nativeDir, source);
  const text = await readFile(src);
  const hash = createHash("sha256").update(text);
  // the local headers it includes are part of its content
  for (const m of text.toString("utf8").matchAll(/^#include "([^"]+)"/gm)) hash.update(await readFile(join(nativeDir, m[1] ?? "")));
  const digest = hash.update(flags.join(" ")).digest("hex").slice(0, 16);
  const dir = join(cacheDir, "bin", `${name}-${digest}`);
  const path = join(dir, name);
  if (existsSync(path)) return { dir, path };
  await mkdir(dir, { recursive: true, mode: 0o755 });
  await chmod(dir, 0o755);
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    await run("cc", ["-O2", "-Wall", "-o", tmp, src, ...flags], { timeout: 120_000 });
  } catch (e) {
    throw new DeltaError("E_SANDBOX", `cannot build ${name} (needs cc${flags.length ? " and " + flags.join(" ") : ""}): ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  await chmod(tmp, 0o755);
  await rename(tmp, path);
  return { dir, path };
}

/** The static in-container helper: `init`, `step`, and host-side `unshare-cgroup2`. */
export function buildSandboxHelper(cacheDir: string): Promise<NativeTool> {
  return build(cacheDir, "sandbox-helper", "sandbox-helper.c", ["-static"]);
}

/** Reads a simple rule list on stdin and writes the compiled BPF program to stdout. */
export function buildSeccompExporter(cacheDir: string): Promise<NativeTool> {
  return build(cacheDir, "seccomp-export", "seccomp-export.c", ["-lseccomp"]);
}

/** The resident spawner (resident-spawner.ts): runs host commands so the node host does not fork. */
export function buildSpawner(cacheDir: string): Promise<NativeTool> {
  return build(cacheDir, "spawner", "spawner.c", []);
}

/** Host-side job disk work: data extents of a template, loop attach + ext4 mount, unmount. */
export function buildDiskTool(cacheDir: string): Promise<NativeTool> {
  return build(cacheDir, "disk-tool", "disk-tool.c", []);
}
