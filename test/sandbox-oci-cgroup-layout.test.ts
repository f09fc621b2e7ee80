/**
 * The pure cgroup v1 and pure v2 paths, end to end on a hybrid host: this file re-runs itself
 * (`--child v1|v2`) inside a private mount namespace whose cgroup mounts are rearranged (the host's
 * mount table is untouched), and asserts the JSON the child prints.
 * - v1: the cgroup2 mount is unmounted: crun runs directly (no wrapper), a memory limit is reported
 *   as memory_limit, nothing is left.
 * - v2: the v1 hierarchies are unmounted and cgroup2 mounted at /sys/fs/cgroup. On a hybrid host the
 *   controllers stay bound to v1, so only what needs no controller works: a crun container without
 *   resource limits; the factory must refuse with a clear E_SANDBOX naming the missing controllers.
 */
import assert from "node:assert/strict";
import { execFile, execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { systemClock } from "../src/base/clock.ts";
import { DeltaError } from "../src/base/errors.ts";
import { projectRoot } from "../src/config/paths.ts";
import { runStep } from "../src/sandbox/conformance.ts";
import { cgroupDirs, cgroupProblems, detectCgroupLayout, JobCgroup, readCgroupHostFacts, removeCgroupTree, type CgroupLayout } from "../src/sandbox/oci/cgroups.ts";
import { CrunSandboxFactory } from "../src/sandbox/oci/crun-sandbox-factory.ts";
import { slotInfo } from "../src/sandbox/slots.ts";
import type { SandboxLogger, SlotInfo } from "../src/sandbox/types.ts";
import { baseSpec, randomSlot, tempRoot } from "./support/sandbox-harness.ts";

const quiet: SandboxLogger = { info: () => {}, warn: () => {} };
const factoryIn = (root: string) => new CrunSandboxFactory({ clock: systemClock, logger: quiet, cacheDir: "/var/cache/deltaci", cacheRoot: join(root, "caches") });
const RESULT = "RESULT ";

function layoutSummary(l: CgroupLayout): object {
  return l.kind === "v1" ? { kind: "v1", hybridUnified: l.hybridUnified, memory: l.controllers.get("memory") ?? null } : { kind: "v2", root: l.root };
}

/** Child, pure v1: a real sandbox with a 64 MiB memory limit and a memory bomb. */
async function childV1(root: string, slot: SlotInfo): Promise<object> {
  const layout = detectCgroupLayout();
  const factory = factoryIn(root);
  const crunArgv0 = (await factory.prepare()).crun.argv(["list"])[0];
  const spec = baseSpec(slot, { limits: { timeoutMs: 600_000, cpus: 1, memoryMiB: 64, diskMiB: 256, pids: 256, logMiB: 64 } });
  const sb = await factory.create(spec);
  let bomb, alive;
  try {
    bomb = await runStep(sb, "python3 -c \"b = b'x' * (256 * 1024 * 1024); print(len(b))\"");
    alive = await runStep(sb, "echo alive");
  } finally {
    await sb.dispose();
  }
  return {
    layout: layoutSummary(layout),
    crunArgv0,
    bombLimit: bomb.result.limit,
    alive: alive.stdout.toString(),
    leftovers: await factory.inspectSlot(slot),
    reaped: await factory.reapSlot(slot),
  };
}

/** A minimal bundle (read-only host /usr, user namespace of the slot) without `linux.resources`. */
function bareBundle(dir: string, slot: SlotInfo, cgroupsPath: string): void {
  const rootfs = join(dir, "rootfs");
  mkdirSync(join(rootfs, "usr"), { recursive: true });
  for (const d of ["proc", "dev", "tmp"]) mkdirSync(join(rootfs, d));
  for (const l of ["bin", "lib", "lib64", "sbin"]) if (existsSync(`/usr/${l}`)) symlinkSync(`usr/${l}`, join(rootfs, l));
  const idMap = [{ containerID: 0, hostID: slot.hostUidBase, size: slot.uidCount }];
  writeFileSync(join(dir, "config.json"), JSON.stringify({
    ociVersion: "1.0.2",
    process: { terminal: false, user: { uid: 0, gid: 0 }, args: ["sleep", "600"], env: ["PATH=/usr/bin:/bin"], cwd: "/", noNewPrivileges: true },
    root: { path: rootfs, readonly: true },
    hostname: "sandbox",
    mounts: [
      { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "nodev", "noexec"] },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "mode=755", "size=1m"] },
      { destination: "/usr", type: "bind", source: "/usr", options: ["rbind", "nosuid", "nodev", "ro"] },
    ],
    linux: {
      uidMappings: idMap,
      gidMappings: idMap,
      namespaces: ["pid", "network", "ipc", "uts", "mount", "cgroup", "user"].map((type) => ({ type })),
      cgroupsPath,
    },
  }));
}

/** Child, pure v2 view of a hybrid host: what works without controllers, and what the factory says. */
async function childV2(root: string, slot: SlotInfo): Promise<object> {
  const layout = detectCgroupLayout();
  const problems = cgroupProblems(layout, await readCgroupHostFacts(layout));
  // 1. a container without resource limits: crun runs directly, the job cgroup works on v2
  const state = join(root, "crun-state");
  const bundle = join(root, "bare-bundle");
  const id = `deltaci-s${slot.index}-v2probe`;
  const path = `/deltaci/slot-${slot.index}/${id}`;
  bareBundle(bundle, slot, path);
  const crun = (args: string[]) => spawnSync("crun", ["--root", state, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 60_000 });
  const run = crun(["run", "-d", "--bundle", bundle, id]);
  let bare: object = { runExit: run.status, runStderr: run.stderr };
  if (run.status === 0) {
    const cgroup = new JobCgroup(layout, path);
    const initPid = (JSON.parse(crun(["state", id]).stdout) as { pid: number }).pid;
    const pids = await cgroup.pids();
    const inside = crun(["exec", id, "cat", "/proc/self/cgroup"]).stdout;
    const counters = await cgroup.counters();
    const del = crun(["delete", "-f", id]);
    const removed = await removeCgroupTree(layout, `/deltaci/slot-${slot.index}`);
    bare = { ...bare, initInCgroup: pids.includes(initPid), inside, counters, deleteExit: del.status, removed, left: cgroupDirs(layout, path).filter((d) => existsSync(d)) };
  }
  // 2. the factory, which always sets memory, pids and cpu limits
  const factory = factoryIn(root);
  let factoryError: object | null = null;
  try {
    const sb = await factory.create(baseSpec(slot));
    await sb.dispose();
  } catch (e) {
    factoryError = { code: e instanceof DeltaError ? e.code : null, message: e instanceof Error ? e.message : String(e) };
  }
  // (what is left is checked from the host: a factory that refuses to prepare cannot inspect)
  return { layout: layoutSummary(layout), problems, bare, factoryError };
}

/** Runs this file as a child in a private mount namespace prepared by `setup` (sh). */
function runChild(mode: "v1" | "v2", setup: string, root: string, slot: SlotInfo): Promise<{ code: number; result: Record<string, unknown> | null; output: string }> {
  const args = ["-m", "--propagation", "private", "sh", "-c", `set -e; ${setup}; exec "$@"`, "sh", process.execPath, "--import", "tsx", join(projectRoot(), "test", "sandbox-oci-cgroup-layout.test.ts"), "--child", mode, root, String(slot.index)];
  return new Promise((resolve) => {
    execFile("unshare", args, { cwd: projectRoot(), timeout: 300_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const line = String(stdout).split("\n").find((l) => l.startsWith(RESULT));
      resolve({ code: err === null ? 0 : typeof err.code === "number" ? err.code : 1, result: line ? (JSON.parse(line.slice(RESULT.length)) as Record<string, unknown>) : null, output: `${String(stdout)}\n${String(stderr)}` });
    });
  });
}

const childAt = process.argv.indexOf("--child");
if (childAt >= 0) {
  const [mode, root, index] = process.argv.slice(childAt + 1);
  const slot = slotInfo(Number(index), join(root ?? "", "slots"));
  const result = mode === "v1" ? await childV1(root ?? "", slot) : await childV2(root ?? "", slot);
  console.log(RESULT + JSON.stringify(result));
} else {
  const host = detectCgroupLayout();
  const hybrid = host.kind === "v1" && host.hybridUnified !== null ? host.hybridUnified : null;
  const noV1 = host.kind === "v2" ? "this host is pure cgroup v2: no v1 hierarchy to test (the other oci tests cover v2 here)" : false;
  const noV2 = hybrid === null ? "this host is not hybrid: the other oci tests cover its own layout" : false;
  if (noV1) console.log(`# skipping the pure-v1 test: ${noV1}`);
  if (noV2) console.log(`# skipping the pure-v2 view test: ${noV2}`);
  const root = tempRoot("cglayout");
  const slots: SlotInfo[] = [];
  /** The host-side view of a slot: containers, v1 cgroups, mounts, loop devices, dirs, plus its cgroup2 dirs. */
  const hostLeftovers = async (slot: SlotInfo) => {
    const found = await factoryIn(root).inspectSlot(slot);
    if (hybrid !== null) found.push(...cgroupDirs({ kind: "v2", root: hybrid }, `/deltaci/slot-${slot.index}`).filter((d) => existsSync(d)));
    return found;
  };

  void describe("cgroup layouts other than the host's (private mount namespaces)", { timeout: 600_000 }, () => {
    after(async () => {
      const factory = factoryIn(root);
      for (const slot of slots) {
        await factory.reapSlot(slot);
        if (hybrid !== null) await removeCgroupTree({ kind: "v2", root: hybrid }, `/deltaci/slot-${slot.index}`);
        await factory.pruneImages(slot);
      }
      rmSync(root, { recursive: true, force: true });
    });

    void it("pure v1: crun runs without the wrapper, memory_limit is reported, nothing is left", { skip: noV1 }, async () => {
      const slot = randomSlot(root);
      slots.push(slot);
      const r = await runChild("v1", hybrid === null ? "true" : `umount ${hybrid}`, root, slot);
      assert.equal(r.code, 0, r.output);
      assert.ok(r.result, r.output);
      console.log(`# v1 child: ${JSON.stringify(r.result)}`);
      assert.deepEqual(r.result.layout, { kind: "v1", hybridUnified: null, memory: "/sys/fs/cgroup/memory" });
      assert.equal(r.result.crunArgv0, "crun", "crun is run directly, not through unshare-cgroup2");
      assert.deepEqual(r.result.bombLimit, { reason: "memory_limit", message: "memory limit of 64 MiB exceeded" });
      assert.equal(r.result.alive, "alive\n");
      assert.deepEqual(r.result.leftovers, []);
      assert.deepEqual(r.result.reaped, []);
      assert.deepEqual(await hostLeftovers(slot), []);
    });

    // one child run for the two v2 tests: what works in the view, and what the factory says
    let v2Run: Promise<{ slot: SlotInfo; result: Record<string, unknown> }> | null = null;
    const v2Child = () => (v2Run ??= (async () => {
      const slot = randomSlot(root);
      slots.push(slot);
      // unmount every cgroup file system (v1 hierarchies and the cgroup2 mount), then the tmpfs below them
      const setup = "for m in $(awk '$9 == \"cgroup\" || $9 == \"cgroup2\" { print $5 }' /proc/self/mountinfo | sort -r); do umount -l \"$m\"; done; umount -l /sys/fs/cgroup; mount -t cgroup2 cgroup2 /sys/fs/cgroup";
      const r = await runChild("v2", setup, root, slot);
      assert.equal(r.code, 0, r.output);
      assert.ok(r.result, r.output);
      console.log(`# v2 child: ${JSON.stringify(r.result)}`);
      return { slot, result: r.result };
    })());

    void it("pure v2 view of a hybrid host: layout, the preflight's reasons, a container without limits, nothing left", { skip: noV2 }, async () => {
      const { slot, result } = await v2Child();
      assert.deepEqual(result.layout, { kind: "v2", root: "/sys/fs/cgroup" });
      const problems = result.problems as string[];
      assert.match(problems[0] ?? "", /^cgroup v2 at \/sys\/fs\/cgroup does not offer the memory, pids, cpu controllers needed to enforce the job limits memoryMiB, pids, cpus \(memory, pids, cpu bound to a cgroup v1 hierarchy/);
      const bare = result.bare as Record<string, unknown>;
      assert.equal(bare.runExit, 0, `crun run of a bundle without resources: ${String(bare.runStderr)}`);
      assert.equal(bare.initInCgroup, true, "the job cgroup's cgroup.procs lists the container's init");
      assert.match(String(bare.inside), /^0::\/$/m, "the v2 line: a cgroup namespace rooted at the job cgroup");
      assert.deepEqual(bare.counters, { oomKills: 0, pidsMax: 0 });
      assert.equal(bare.deleteExit, 0);
      assert.deepEqual(bare.left, []);
      assert.deepEqual(await hostLeftovers(slot), []);
      // the container's cgroup was in the host's one cgroup2 hierarchy: gone there too
      assert.equal(execFileSync("find", [hybrid ?? "/nonexistent", "-path", `*/deltaci/slot-${slot.index}*`], { encoding: "utf8" }), "");
    });

    void it("pure v2 view of a hybrid host: the factory refuses with an E_SANDBOX naming the missing controllers", { skip: noV2 }, async () => {
      const { result } = await v2Child();
      const err = result.factoryError as { code: string; message: string } | null;
      assert.ok(err, "the factory must refuse: it cannot enforce memory, pids or cpu limits here");
      assert.equal(err.code, "E_SANDBOX");
      assert.match(err.message, /memory, pids, cpu controllers/, `names the missing controllers instead of crun's own message: ${err.message}`);
    });
  });
}
