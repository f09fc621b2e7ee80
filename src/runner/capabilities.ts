/**
 * What this runner offers: os, arch, resources, labels, isolation and the host image's
 * toolchain versions. Toolchains are probed in parallel with a short timeout, looked up in the
 * host image's fixed bin dirs (not the runner's PATH), and cached in a file keyed by each
 * binary's mtime and size, so a warm start costs a few stats.
 */
import { execFile } from "node:child_process";
import { mkdir, readFile, rename, stat, statfs, unlink, writeFile } from "node:fs/promises";
import os from "node:os";
import { dirname } from "node:path";
import type { Clock } from "../base/clock.ts";
import { withIsolationLabels, type Capabilities } from "../protocol/schemas.ts";
import type { Isolation } from "../sandbox/types.ts";

const BIN_DIRS = ["/usr/local/bin", "/usr/bin", "/bin"];
const PROBES: Record<string, { bin: string; args: string[]; pick: RegExp }> = {
  node: { bin: "node", args: ["--version"], pick: /v?(\d+\.\d+\.\d+\S*)/ },
  git: { bin: "git", args: ["--version"], pick: /(\d+\.\d+(?:\.\d+)?\S*)/ },
  python3: { bin: "python3", args: ["--version"], pick: /(\d+\.\d+(?:\.\d+)?\S*)/ },
  gcc: { bin: "gcc", args: ["-dumpfullversion", "-dumpversion"], pick: /(\d+(?:\.\d+)*)/ },
};

interface CacheEntry {
  key: string;
  version: string;
}

async function findBin(name: string, binDirs: readonly string[]): Promise<{ path: string; key: string } | null> {
  for (const dir of binDirs) {
    const path = `${dir}/${name}`;
    const st = await stat(path).catch(() => null);
    if (st?.isFile()) return { path, key: `${path}:${st.size}:${st.mtimeMs}` };
  }
  return null;
}

function run(path: string, args: string[], timeoutMs: number, binDirs: readonly string[]): Promise<string> {
  return new Promise((resolve) => {
    execFile(path, args, { timeout: timeoutMs, env: { PATH: binDirs.join(":"), LANG: "C" } }, (err, stdout, stderr) => resolve(err ? "" : `${stdout}${stderr}`));
  });
}

function sameEntries(a: Record<string, CacheEntry>, b: Record<string, CacheEntry>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => a[k]?.key === b[k]?.key && a[k]?.version === b[k]?.version);
}

/** A probe's outcome: the versions, and whether every tool found answered (none timed out or failed). */
export interface ToolchainProbe {
  versions: Record<string, string>;
  complete: boolean;
}

/** Probes in flight, by cache file (and bin dirs): a runner host's sessions that start together share one. */
const inFlight = new Map<string, { probe: Promise<ToolchainProbe>; versions: Promise<Record<string, string>> }>();

/**
 * Toolchain name → version, probed in parallel (cached in `cacheFile` when given). Callers with
 * the same cache file while a probe runs get that probe: a host starting 8 sessions on an empty
 * cache runs each tool once, not 8 times (a fork of the host each).
 */
export function probeToolchains(cacheFile: string | null, timeoutMs = 2000): Promise<Record<string, string>> {
  return shareProbe(cacheFile, timeoutMs, BIN_DIRS).versions;
}

/** `probeToolchains` with whether it is complete; `binDirs`: where the tools are looked up (tests). */
export function probeToolchainsFully(cacheFile: string | null, timeoutMs = 2000, binDirs: readonly string[] = BIN_DIRS): Promise<ToolchainProbe> {
  return shareProbe(cacheFile, timeoutMs, binDirs).probe;
}

function shareProbe(cacheFile: string | null, timeoutMs: number, binDirs: readonly string[]) {
  const start = () => {
    const probe = probeOnce(cacheFile, timeoutMs, binDirs);
    return { probe, versions: probe.then((p) => p.versions) };
  };
  if (cacheFile === null) return start();
  const key = `${cacheFile}\0${binDirs.join(":")}`;
  let shared = inFlight.get(key);
  if (shared === undefined) {
    shared = start();
    const done = () => inFlight.delete(key);
    shared.probe.then(done, done);
    inFlight.set(key, shared);
  }
  return shared;
}

async function probeOnce(cacheFile: string | null, timeoutMs: number, binDirs: readonly string[]): Promise<ToolchainProbe> {
  let cache: Record<string, CacheEntry> = {};
  if (cacheFile) cache = await readFile(cacheFile, "utf8").then((t) => JSON.parse(t) as Record<string, CacheEntry>).catch(() => ({}));
  const next: Record<string, CacheEntry> = {};
  let complete = true;
  await Promise.all(Object.entries(PROBES).map(async ([name, p]) => {
    const bin = await findBin(p.bin, binDirs);
    if (!bin) return;
    const hit = cache[name];
    if (hit && hit.key === bin.key) {
      next[name] = hit;
      return;
    }
    const m = p.pick.exec(await run(bin.path, p.args, timeoutMs, binDirs));
    if (m?.[1]) next[name] = { key: bin.key, version: m[1].slice(0, 64) };
    else complete = false; // found but no answer (timed out under load, failed): not a fact to keep
  }));
  // Runners share the cache file: write a private temp file and rename it, so a reader never sees half of it.
  // (Rewritten only when it changed: a warm start writes nothing.)
  if (cacheFile && !sameEntries(next, cache)) {
    const tmp = `${cacheFile}.${process.pid}.tmp`;
    await mkdir(dirname(cacheFile), { recursive: true, mode: 0o700 }).catch(() => {});
    await writeFile(tmp, JSON.stringify(next), { mode: 0o600 })
      .then(() => rename(tmp, cacheFile))
      .catch(() => unlink(tmp).catch(() => {}));
  }
  return { versions: Object.fromEntries(Object.entries(next).map(([k, v]) => [k, v.version])), complete };
}

/**
 * The toolchain probe as a runner host's sessions share it: one probe serves every session that
 * starts within `recheckMs` of it (a toolchain installed or removed meanwhile shows after that).
 * A failed, empty or incomplete probe (a tool found that did not answer: it timed out while the
 * host was busy) is not kept: the next session probes again, as a runner of its own would.
 */
export class SharedToolchains {
  private probe: Promise<Record<string, string>> | null = null;
  private probedAtMs = -Infinity;

  constructor(private readonly o: { cacheFile: string | null; recheckMs: number; clock: Clock; binDirs?: readonly string[] }) {}

  get(): Promise<Record<string, string>> {
    const now = this.o.clock.now();
    if (this.probe === null || now - this.probedAtMs >= this.o.recheckMs) {
      this.probedAtMs = now;
      const full = probeToolchainsFully(this.o.cacheFile, undefined, this.o.binDirs);
      const probe = full.then((p) => p.versions);
      this.probe = probe;
      full.then((p) => {
        if ((Object.keys(p.versions).length === 0 || !p.complete) && this.probe === probe) this.probe = null;
      }, () => {
        if (this.probe === probe) this.probe = null;
      });
    }
    return this.probe;
  }
}

/** `toolchains`: the probe, started by the caller (probeToolchains) as early as it likes. */
export async function probeCapabilities(opts: { labels: string[]; isolation: Isolation; workDir: string; toolchains: Promise<Record<string, string>> }): Promise<Capabilities> {
  const [toolchains, fs] = await Promise.all([opts.toolchains, statfs(opts.workDir).catch(() => null)]);
  return {
    os: os.platform(),
    arch: os.arch(),
    labels: withIsolationLabels(opts.labels, opts.isolation),
    toolchains,
    resources: {
      cpus: os.availableParallelism(),
      memoryMiB: Math.floor(os.totalmem() / (1024 * 1024)),
      diskMiB: fs ? Math.floor((fs.bavail * fs.bsize) / (1024 * 1024)) : 0,
    },
    isolation: [opts.isolation],
  };
}
