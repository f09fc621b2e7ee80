/** Whether the oci sandbox works here: crun present and the factory's one-time preparation passes. */
import { execFile } from "node:child_process";
import { systemClock } from "../../base/clock.ts";
import { CrunSandboxFactory } from "../../sandbox/oci/crun-sandbox-factory.ts";

function crunVersion(): Promise<string | null> {
  return new Promise((resolve) => {
    // Asynchronous: `deltaci run` starts its server meanwhile.
    execFile("crun", ["--version"], { encoding: "utf8", timeout: 10_000 }, (err, _out, stderr) => {
      resolve(err ? (stderr.trim() || err.message) : null);
    });
  });
}

/**
 * null when the oci isolation is usable, else why not (in a sentence). `factory` is prepared
 * (helper build, host /etc, cgroup layout): pass the one the runners will use, so they find
 * that work done; by default a throwaway one (which still warms the on-disk caches).
 */
export async function checkIsolation(factory?: CrunSandboxFactory): Promise<string | null> {
  const problem = await crunVersion();
  if (problem !== null) return `crun is not installed or does not run (${problem}); install it with: apt-get install crun`;
  if (typeof process.getuid === "function" && process.getuid() !== 0) return "the oci sandbox needs root (user namespaces, cgroups, mounts); run as root";
  const quiet = { info: () => {}, warn: () => {} };
  try {
    await (factory ?? new CrunSandboxFactory({ clock: systemClock, logger: quiet })).prepare();
  } catch (err) {
    return (err as Error).message;
  }
  return null;
}
