/** Whether the oci sandbox works here: crun present and the factory's one-time preparation passes. */
import { spawnSync } from "node:child_process";
import { systemClock } from "../../base/clock.ts";
import { CrunSandboxFactory } from "../../sandbox/oci/crun-sandbox-factory.ts";

/** null when the oci isolation is usable, else why not (in a sentence). */
export async function checkIsolation(): Promise<string | null> {
  const v = spawnSync("crun", ["--version"], { encoding: "utf8", timeout: 10_000 });
  if (v.error || v.status !== 0) return `crun is not installed or does not run (${v.error?.message ?? v.stderr.trim()}); install it with: apt-get install crun`;
  if (typeof process.getuid === "function" && process.getuid() !== 0) return "the oci sandbox needs root (user namespaces, cgroups, mounts); run as root";
  const quiet = { info: () => {}, warn: () => {} };
  try {
    // Also warms what every runner needs (helper build, host /etc, cgroup layout) once, here.
    await new CrunSandboxFactory({ clock: systemClock, logger: quiet }).prepare();
  } catch (err) {
    return (err as Error).message;
  }
  return null;
}
