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

export interface Spawner extends NativeTool {
  /** crun's `run -d` and `delete -f` are built in (libcrun, crun-builtin.h): no crun exec for them. */
  builtinCrun: boolean;
  /** Why crun is not built in, when libcrun was asked for. */
  noBuiltinCrun?: string;
}

/**
 * The resident spawner (resident-spawner.ts): runs host commands so the node host does not fork.
 * With `libcrun` (from libcrunLink) it links libcrun for crun's `run -d` and `delete -f`; if that
 * build fails, the spawner is built without it and execs crun.
 */
export async function buildSpawner(cacheDir: string, libcrun: LibcrunLink | null = null): Promise<Spawner> {
  if (libcrun !== null && "flags" in libcrun) {
    try {
      return { ...(await build(cacheDir, "spawner", "spawner.c", libcrun.flags)), builtinCrun: true };
    } catch (e) {
      return { ...(await build(cacheDir, "spawner", "spawner.c", [])), builtinCrun: false, noBuiltinCrun: e instanceof Error ? e.message : String(e) };
    }
  }
  return { ...(await build(cacheDir, "spawner", "spawner.c", [])), builtinCrun: false, ...(libcrun !== null ? { noBuiltinCrun: libcrun.reason } : {}) };
}

/** The crun whose libcrun.a crun-builtin.h declares: Debian 12's 1.8.1. */
const LIBCRUN_COMMIT = "f8a096be060b22ccd3d5f3ebe44108517fbf6c30";

/** How to link libcrun into the spawner (cc flags), or why it cannot be. */
export type LibcrunLink = { flags: string[] } | { reason: string };

/**
 * The flags that link the crun package's libcrun.a (and, by path, the libraries it needs:
 * their -dev packages are not required; libsystemd is replaced by stubs) into the spawner, when `crunPath` is crun 1.8.1 of commit
 * LIBCRUN_COMMIT and libcrun.a comes from a crun 1.8.1 package: crun-builtin.h's declarations are
 * that version's, and the built-in commands must do what `crunPath` would.
 */
export async function libcrunLink(crunPath: string): Promise<LibcrunLink> {
  const out = async (file: string, args: string[]) => (await run(file, args, { timeout: 10_000 })).stdout.trim();
  try {
    const version = await out(crunPath, ["--version"]);
    if (!version.startsWith("crun version 1.8.1\n") || !version.includes(`commit: ${LIBCRUN_COMMIT}`)) return { reason: `${crunPath} is not crun 1.8.1 (${LIBCRUN_COMMIT})` };
    const arch = await out("cc", ["-print-multiarch"]);
    const libcrun = `/usr/lib/${arch}/libcrun.a`;
    if (!existsSync(libcrun)) return { reason: `no ${libcrun}` };
    const owner = await out("dpkg-query", ["-S", libcrun]);
    const pkg = owner.split(":")[0] ?? "";
    if (!(await out("dpkg-query", ["-W", "-f", "${Version}", pkg])).startsWith("1.8.1-")) return { reason: `${libcrun} is not crun 1.8.1's` };
    // libseccomp static where its -dev package is installed (fewer mappings for the spawner's forks
    // to copy); libsystemd not at all (crun-builtin.h)
    const libs = [["libseccomp.a", "libseccomp.so.2"], ["libyajl.so.2"], ["libcap.so.2"]].map(
      (names) => names.flatMap((name) => [`/usr/lib/${arch}/${name}`, `/lib/${arch}/${name}`]).find((p) => existsSync(p)) ?? names.join(" or "),
    );
    const missing = libs.filter((p) => !p.startsWith("/"));
    if (missing.length > 0) return { reason: `libcrun needs ${missing.join(", ")}` };
    return { flags: ["-DDELTACI_LIBCRUN", libcrun, ...libs] };
  } catch (e) {
    return { reason: e instanceof Error ? e.message : String(e) };
  }
}

/** Host-side job disk work: data extents of a template, loop attach + ext4 mount, unmount. */
export function buildDiskTool(cacheDir: string): Promise<NativeTool> {
  return build(cacheDir, "disk-tool", "disk-tool.c", []);
}
