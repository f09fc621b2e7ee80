/**
 * Small C helpers built once per content hash into the cache dir: the container's pid 1 and step
 * wrapper (static, so it runs in any image), the seccomp BPF exporter (libseccomp) and the disk tool.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, realpathSync, statSync } from "node:fs";
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { basename, delimiter, join } from "node:path";
import { promisify } from "node:util";
import { DeltaError } from "../../base/errors.ts";
import { projectRoot } from "../../config/paths.ts";

const run = promisify(execFile);

export interface NativeTool {
  /** Directory holding only this binary (bind-mounted read-only into containers). */
  dir: string;
  path: string;
}

/** Where a tool's binary goes: a dir named by the hash of its source, the local headers it includes and `key` (its flags, or what decides them). */
async function toolPaths(cacheDir: string, name: string, source: string, key: string): Promise<NativeTool & { src: string }> {
  const nativeDir = join(projectRoot(), "src", "sandbox", "oci", "native");
  const src = join(nativeDir, source);
  const text = await readFile(src);
  const hash = createHash("sha256").update(text);
  // the local headers it includes are part of its content
  for (const m of text.toString("utf8").matchAll(/^#include "([^"]+)"/gm)) hash.update(await readFile(join(nativeDir, m[1] ?? "")));
  const digest = hash.update(key).digest("hex").slice(0, 16);
  const dir = join(cacheDir, "bin", `${name}-${digest}`);
  return { src, dir, path: join(dir, name) };
}

async function compile(name: string, tool: NativeTool & { src: string }, flags: string[]): Promise<void> {
  await mkdir(tool.dir, { recursive: true, mode: 0o755 });
  await chmod(tool.dir, 0o755);
  const tmp = `${tool.path}.tmp-${process.pid}`;
  try {
    await run("cc", ["-O2", "-Wall", "-o", tmp, tool.src, ...flags], { timeout: 120_000 });
  } catch (e) {
    throw new DeltaError("E_SANDBOX", `cannot build ${name} (needs cc${flags.length ? " and " + flags.join(" ") : ""}): ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  await chmod(tmp, 0o755);
  await rename(tmp, tool.path);
}

async function build(cacheDir: string, name: string, source: string, flags: string[]): Promise<NativeTool> {
  const tool = await toolPaths(cacheDir, name, source, flags.join(" "));
  if (!existsSync(tool.path)) await compile(name, tool, flags);
  return { dir: tool.dir, path: tool.path };
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
 * With `crunPath`, it links libcrun for crun's `run -d` and `delete -f` where libcrunLink allows
 * it; else, or if that build fails, it is built without it and execs crun. Whether it links is
 * decided once per (source, `crunPath`, the crun package's files as they are on disk) and kept
 * beside the binary: a later start runs nothing to find out (libcrunLink's checks fork this
 * process four times, 15–60 ms of its CPU).
 */
export async function buildSpawner(cacheDir: string, crunPath: string | null = null): Promise<Spawner> {
  const plain = async (noBuiltinCrun?: string): Promise<Spawner> => ({ ...(await build(cacheDir, "spawner", "spawner.c", [])), builtinCrun: false, ...(noBuiltinCrun !== undefined ? { noBuiltinCrun } : {}) });
  if (crunPath === null) return plain();
  if (!existsSync(LIBCRUN_ARCHIVE)) return plain(`no ${LIBCRUN_ARCHIVE}`);
  const key = ["libcrun", crunPath, ...libcrunKeyFiles(crunPath).map(fileIdentity)].join(" ");
  const tool = await toolPaths(cacheDir, "spawner", "spawner.c", key);
  const refused = join(tool.dir, "no-libcrun");
  if (existsSync(tool.path)) return { dir: tool.dir, path: tool.path, builtinCrun: true };
  if (existsSync(refused)) return plain(await readFile(refused, "utf8"));
  const link = await libcrunLink(crunPath);
  let reason: string;
  let transient = false;
  if ("flags" in link) {
    try {
      await compile("spawner", tool, link.flags);
      return { dir: tool.dir, path: tool.path, builtinCrun: true };
    } catch (e) {
      reason = e instanceof Error ? e.message : String(e);
      transient = e instanceof Error && didNotFinish(e.cause);
    }
  } else ({ reason, transient = false } = link);
  // a check or build that did not run to its end (a timeout under load, a failed fork) decides
  // nothing: the next start tries again
  if (transient) return plain(reason);
  await mkdir(tool.dir, { recursive: true, mode: 0o755 });
  const tmp = `${refused}.tmp-${process.pid}`;
  await writeFile(tmp, reason);
  await rename(tmp, refused);
  return plain(reason);
}

/**
 * The files a libcrun spawner's decision and binary depend on: the crun `crunPath` names as the
 * spawner's execvp finds it (another crun first on PATH, or a new file at that path, is another
 * decision), the crun package's, and every archive libcrunLink may link in (a libseccomp update
 * must not leave its old code in the spawner while crun runs the new one).
 */
export function libcrunKeyFiles(crunPath: string): string[] {
  return [onPath(crunPath), LIBCRUN_ARCHIVE, CRUN_BINARY, ...libCandidates("libseccomp.a")];
}

/** Where libcrunLink looks for a library, in order. */
function libCandidates(name: string): string[] {
  return [`${LIBDIR}/${name}`, `/lib/x86_64-linux-gnu/${name}`];
}

/** Whether a command's error is one of a command that did not run to its exit (killed, timed out, not started). */
function didNotFinish(e: unknown): boolean {
  return !(e instanceof Error && "code" in e && typeof e.code === "number");
}

/** The file execvp would run for `file` (PATH searched when it has no slash), or `file` itself when none is found. */
function onPath(file: string): string {
  if (file.includes("/")) return file;
  // the spawner's execvp searches the PATH it inherits from this process
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    const path = join(dir || ".", file);
    try {
      if (statSync(path).isFile()) return path;
    } catch {}
  }
  return file;
}

/** A file as it is on disk (a package upgrade changes it), or its absence. */
function fileIdentity(path: string): string {
  try {
    const st = statSync(path);
    return `${path}:${st.ino}:${st.size}:${st.mtimeMs}`;
  } catch {
    return `${path}:-`;
  }
}

/** Debian 12's amd64 crun package's static library (crun-builtin.h's handlers path is that build's too). */
const LIBCRUN_ARCHIVE = "/usr/lib/x86_64-linux-gnu/libcrun.a";
const LIBDIR = "/usr/lib/x86_64-linux-gnu";

/** The crun package's binary: the only crun the built-in stands in for. */
const CRUN_BINARY = "/usr/bin/crun";

/** The file `path` names once every symlink is followed, or null when there is none. */
function realpathOrNull(path: string): string | null {
  try {
    return realpathSync(path);
  } catch {
    return null;
  }
}

/** The crun whose libcrun.a crun-builtin.h declares: Debian 12's 1.8.1. */
const LIBCRUN_COMMIT = "f8a096be060b22ccd3d5f3ebe44108517fbf6c30";

/** How to link libcrun into the spawner (cc flags), or why it cannot be (`transient`: a check did not run to its end). */
export type LibcrunLink = { flags: string[] } | { reason: string; transient?: boolean };

/**
 * The flags that link the crun package's libcrun.a (and, by path, the libraries it needs:
 * their -dev packages are not required; libsystemd is replaced by stubs) into the spawner, when `crunPath` is crun 1.8.1 of commit
 * LIBCRUN_COMMIT and libcrun.a comes from a crun 1.8.1 package: crun-builtin.h's declarations are
 * that version's, and the built-in commands must do what `crunPath` would.
 */
export async function libcrunLink(crunPath: string): Promise<LibcrunLink> {
  const out = async (file: string, args: string[]) => (await run(file, args, { timeout: 10_000 })).stdout.trim();
  try {
    if (!existsSync(LIBCRUN_ARCHIVE)) return { reason: `no ${LIBCRUN_ARCHIVE}` };
    // crun.c's fill_handler_from_argv0: a crun named crun-HANDLER (or krun) runs every container
    // with that handler, which the built-in commands do not choose
    const name = basename(crunPath);
    if (/^crun-./.test(name) || name === "krun") return { reason: `${crunPath} runs containers with handler ${name === "krun" ? "krun" : name.slice(5)}` };
    // a crunPath that wraps crun (a script that adds flags, or runs crun under aa-exec) must run
    // as itself: the built-in would bypass it. Only the package's own binary is built in.
    const binary = realpathOrNull(onPath(crunPath));
    if (binary !== CRUN_BINARY) return { reason: `${crunPath} is not ${CRUN_BINARY} (a crun wrapper runs as itself)` };
    const version = await out(crunPath, ["--version"]);
    if (!version.startsWith("crun version 1.8.1\n") || !version.includes(`commit: ${LIBCRUN_COMMIT}`)) return { reason: `${crunPath} is not crun 1.8.1 (${LIBCRUN_COMMIT})` };
    const pkg = (await out("dpkg-query", ["-S", LIBCRUN_ARCHIVE])).split(":")[0] ?? "";
    if (!(await out("dpkg-query", ["-W", "-f", "${Version}", pkg])).startsWith("1.8.1-")) return { reason: `${LIBCRUN_ARCHIVE} is not crun 1.8.1's` };
    if ((await out("dpkg-query", ["-S", CRUN_BINARY])).split(":")[0] !== pkg) return { reason: `${CRUN_BINARY} is not from ${pkg}, the package of ${LIBCRUN_ARCHIVE}` };
    // libseccomp static where its -dev package is installed (fewer mappings for the spawner's forks
    // to copy); libsystemd not at all (crun-builtin.h)
    const libs = [["libseccomp.a", "libseccomp.so.2"], ["libyajl.so.2"], ["libcap.so.2"]].map(
      (names) => names.flatMap(libCandidates).find((p) => existsSync(p)) ?? names.join(" or "),
    );
    const missing = libs.filter((p) => !p.startsWith("/"));
    if (missing.length > 0) return { reason: `libcrun needs ${missing.join(", ")}` };
    return { flags: ["-DDELTACI_LIBCRUN", LIBCRUN_ARCHIVE, ...libs] };
  } catch (e) {
    return { reason: e instanceof Error ? e.message : String(e), transient: didNotFinish(e) };
  }
}

/** Host-side job disk work: data extents of a template, loop attach + ext4 mount, unmount. */
export function buildDiskTool(cacheDir: string): Promise<NativeTool> {
  return build(cacheDir, "disk-tool", "disk-tool.c", []);
}
