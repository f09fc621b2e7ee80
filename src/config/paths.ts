import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The package's root directory (where package.json is), found by walking up from this module.
 * Works from the sources (src/config/) and from the bundle (dist/), so never build paths from
 * `import.meta.url` elsewhere: use this.
 */
export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error("deltaci: cannot find the package root (package.json)");
    dir = parent;
  }
  return dir;
}

/**
 * node's own flags for a runner host process (docs/benchmarks.md, "Runner host memory"). V8
 * takes them only at start, so they go on node's command line, before the script.
 * - `--liftoff-only`: undici's HTTP parser is WebAssembly (llhttp), and V8 compiles it with
 *   TurboFan too on first use: ~36 MiB of malloc on a compile thread, ~10 MiB of it kept
 *   resident in that thread's arena for the host's life. Liftoff code alone parses the
 *   host's responses with less CPU than the TurboFan compile costs.
 * - `--max-semi-space-size=1` (MiB): node's default lets the young generation grow to 8–16 MiB
 *   under a burst of jobs and keeps it; a host's young objects are its sessions' short-lived
 *   request and log objects.
 * - `--optimize-for-size`: V8 grows the old generation less and gives pages back when the host
 *   goes idle (~3 MiB of an idle host's RSS).
 * - `--no-opt`: no TurboFan; the host's code runs as bytecode and Sparkplug code. TurboFan's part
 *   of node's text is never paged in, nor are its compile zones (~2–4 MiB), and its compiles
 *   cost the host more CPU than the optimized code saved (host CPU per 100 jobs 3.1 against 3.4–3.7 s).
 */
export const RUNNER_HOST_NODE_FLAGS: readonly string[] = ["--max-semi-space-size=1", "--liftoff-only", "--optimize-for-size", "--no-opt"];

/** The command that starts this CLI again in a child process (runners and hosts spawned by a controller); `nodeFlags` go to node. */
export function selfCommand(nodeFlags: readonly string[] = []): { command: string; args: string[] } {
  return { command: process.execPath, args: [...nodeFlags, join(projectRoot(), "bin", "deltaci.js")] };
}

/** The user's cache dir for Delta CI: $XDG_CACHE_HOME/deltaci, else ~/.cache/deltaci (may not exist yet). */
export function userCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.XDG_CACHE_HOME ? join(env.XDG_CACHE_HOME, "deltaci") : join(homedir(), ".cache", "deltaci");
}
