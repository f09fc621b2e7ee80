/**
 * The resident spawner's link decision (buildSpawner with a crun path): kept beside the binary,
 * it must follow the crun that path runs, and keep nothing a check that did not end decided.
 * Skipped where libcrun cannot be linked (crun is not Debian 12's 1.8.1).
 */
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { buildSpawner, libcrunKeyFiles, libcrunLink } from "./native-tools.ts";

const dir = mkdtempSync(join(tmpdir(), "libcrun-link-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const cacheDir = join(dir, "cache");

async function linkable(): Promise<string | null> {
  const link = await libcrunLink("crun");
  return "flags" in link ? null : link.reason;
}

/** A script at `path` that runs `body` (sh) before it execs the real `target`. */
function wrapper(path: string, target: string, body = ""): void {
  writeFileSync(path, `#!/bin/sh\n${body}\nexec ${target} "$@"\n`);
  chmodSync(path, 0o755);
}

void test("a crun path that comes to run another crun is decided again", async (t) => {
  const reason = await linkable();
  if (reason !== null) return void t.skip(`libcrun cannot be linked: ${reason}`);
  const crun = join(dir, "crun_path_changes");
  symlinkSync("/usr/bin/crun", crun);
  assert.equal((await buildSpawner(cacheDir, crun)).builtinCrun, true);
  // the same path now runs a crun whose libcrun is not the one crun-builtin.h declares
  rmSync(crun);
  writeFileSync(crun, "#!/bin/sh\nprintf 'crun version 1.9.2\\ncommit: 0000000000000000000000000000000000000000\\n'\n", { mode: 0o755 });
  const later = await buildSpawner(cacheDir, crun);
  assert.equal(later.builtinCrun, false, "the spawner still does crun's run and delete with libcrun 1.8.1");
  assert.match(later.noBuiltinCrun ?? "", /is not \/usr\/bin\/crun/);
});

void test("a crun path that wraps crun (a script that adds flags) is not built in: it runs as itself", async (t) => {
  const reason = await linkable();
  if (reason !== null) return void t.skip(`libcrun cannot be linked: ${reason}`);
  const crun = join(dir, "crun_wrapper");
  wrapper(crun, "/usr/bin/crun --systemd-cgroup");
  const spawner = await buildSpawner(cacheDir, crun);
  assert.equal(spawner.builtinCrun, false, "the built-in would drop the wrapper's --systemd-cgroup");
  assert.match(spawner.noBuiltinCrun ?? "", /a crun wrapper runs as itself/);
});

void test("a check that did not run to its end is not kept as a refusal", async (t) => {
  const reason = await linkable();
  if (reason !== null) return void t.skip(`libcrun cannot be linked: ${reason}`);
  const crun = join(dir, "crun_check_killed");
  symlinkSync("/usr/bin/crun", crun);
  // the first dpkg-query of the checks is killed (as a timeout under load kills it)
  const bin = join(dir, "bin");
  mkdirSync(bin);
  const once = join(dir, "killed");
  wrapper(join(bin, "dpkg-query"), "/usr/bin/dpkg-query", `[ -e ${once} ] || { : > ${once}; kill -9 $$; }`);
  const path = process.env.PATH;
  process.env.PATH = `${bin}:${path ?? ""}`;
  t.after(() => (process.env.PATH = path));
  const first = await buildSpawner(cacheDir, crun);
  assert.equal(first.builtinCrun, false);
  assert.ok(existsSync(once));
  const second = await buildSpawner(cacheDir, crun);
  assert.equal(second.builtinCrun, true, `the refusal was kept: ${second.noBuiltinCrun}`);
});

void test("a crun named crun-HANDLER (its handler chosen by its name) is not built in", async (t) => {
  const reason = await linkable();
  if (reason !== null) return void t.skip(`libcrun cannot be linked: ${reason}`);
  const crun = join(dir, "crun-wasm");
  symlinkSync("/usr/bin/crun", crun);
  const link = await libcrunLink(crun);
  assert.ok(!("flags" in link), "the built-in would run the container without the wasm handler");
});

void test("every archive linked into the spawner is part of its key (an update of one builds it again)", async (t) => {
  const link = await libcrunLink("crun");
  if (!("flags" in link)) return void t.skip(`libcrun cannot be linked: ${link.reason}`);
  const archives = link.flags.filter((f) => f.endsWith(".a"));
  assert.ok(archives.length > 0);
  for (const a of archives) assert.ok(libcrunKeyFiles("crun").includes(a), `${a} is linked in but not in the key`);
});
