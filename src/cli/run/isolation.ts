/** Whether the oci sandbox works here: crun present and the factory's one-time preparation passes. */
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";
import { systemClock } from "../../base/clock.ts";
import { CrunSandboxFactory } from "../../sandbox/oci/crun-sandbox-factory.ts";

/** Whether `name` is an executable file in one of `$PATH`'s directories (what `execvp` would find). */
function onPath(name: string): boolean {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    try {
      accessSync(join(dir || ".", name), constants.X_OK);
      return true;
    } catch {}
  }
  return false;
}

/**
 * null when the oci isolation is usable, else why not (in a sentence). `factory` is prepared
 * (helper build, host /etc, cgroup layout): pass the one the runners will use, so they find
 * that work done; by default a throwaway one (which still warms the on-disk caches).
 * `crun --version` runs through the factory's resident spawner, as crun does for the jobs:
 * spawning it from this process costs a fork of the whole CLI process (5–15 ms of its thread,
 * on `deltaci run`'s start).
 */
export async function checkIsolation(factory?: CrunSandboxFactory): Promise<string | null> {
  const install = "install it with: apt-get install crun";
  if (!onPath("crun")) return `crun is not installed or does not run (crun not found in PATH); ${install}`;
  if (typeof process.getuid === "function" && process.getuid() !== 0) return "the oci sandbox needs root (user namespaces, cgroups, mounts); run as root";
  const quiet = { info: () => {}, warn: () => {} };
  const used = factory ?? new CrunSandboxFactory({ clock: systemClock, logger: quiet });
  try {
    const { crun } = await used.prepare();
    const version = await crun.run(["--version"], 10_000);
    if (version.code !== 0) return `crun is not installed or does not run (${version.stderr.trim() || `exit ${version.code}`}); ${install}`;
  } catch (err) {
    return (err as Error).message;
  } finally {
    if (!factory) await used.close(); // the throwaway factory's spawner
  }
  return null;
}
