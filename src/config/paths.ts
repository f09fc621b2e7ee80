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

/** The command that starts this CLI again in a child process (runners spawned by a controller). */
export function selfCommand(): { command: string; args: string[] } {
  return { command: process.execPath, args: [join(projectRoot(), "bin", "deltaci.js")] };
}

/** The user's cache dir for Delta CI: $XDG_CACHE_HOME/deltaci, else ~/.cache/deltaci (may not exist yet). */
export function userCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.XDG_CACHE_HOME ? join(env.XDG_CACHE_HOME, "deltaci") : join(homedir(), ".cache", "deltaci");
}
