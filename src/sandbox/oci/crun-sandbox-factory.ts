/**
 * The `oci` backend: one hardened crun container per job (see docs/sandbox.md). `create` builds
 * the job's disk, root file system, bundle and container; `dispose` and `reapSlot` remove them.
 */
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Clock } from "../../base/clock.ts";
import { DeltaError } from "../../base/errors.ts";
import { defaults } from "../../config/defaults.ts";
import { isJobDirName, slotPrefix } from "../job-names.ts";
import { SlotLedger } from "../slot-ledger.ts";
import { extractSourceArchive } from "../source-archive.ts";
import type { Sandbox, SandboxFactory, SandboxLogger, SandboxSpec, SlotInfo, WarmSpec } from "../types.ts";
import { WarmPool, warmKey } from "../warm-pool.ts";
import { detectAppArmor, DEFAULT_APPARMOR_PROFILE } from "./apparmor.ts";
import { CONTAINER_CAPS } from "./bundle.ts";
import { prepareSeccomp, type PreparedSeccomp } from "./seccomp-bpf.ts";
import type { ResolveHost } from "./egress-proxy.ts";
import { assertCgroupSupport, cgroupDirs, detectCgroupLayout, removeCgroupTree, type CgroupLayout } from "./cgroups.ts";
import { CrunCli } from "./crun-cli.ts";
import { buildSandbox, makeJobDir, type BuildEnv } from "./crun-build.ts";
import type { CrunSandbox } from "./crun-sandbox.ts";
import { DiskTemplates } from "./disk-template.ts";
import { hostEtc, hostRootfsMounts, sharedHostSkeleton } from "./host-rootfs.ts";
import type { OciMount } from "./bundle.ts";
import { loopDevicesBelow, mountsBelow } from "./job-disk.ts";
import { hostTool, type HostCommands, type HostTool } from "./host-commands.ts";
import { buildDiskTool, buildSandboxHelper, buildSpawner, type NativeTool } from "./native-tools.ts";
import { SpareDisks } from "./spare-disks.ts";
import { ResidentSpawner } from "./resident-spawner.ts";
import { removeContainer, removeJobFiles, type TeardownContext } from "./teardown.ts";
import { TransparentEgress } from "./transparent-egress.ts";

export interface CrunSandboxOptions {
  clock: Clock;
  logger: SandboxLogger;
  /** Built helpers, generated /etc, unpacked images, compiled seccomp filters. */
  cacheDir?: string;
  /** crun `--root`. */
  stateRoot?: string;
  crunPath?: string;
  /**
   * Link libcrun into the resident spawner, which then does crun's `run -d` and `delete -f` itself
   * (no crun exec; native/crun-builtin.h), where `crunPath` is Debian 12's crun 1.8.1 and its
   * libcrun.a is installed. Default true unless the environment has DELTACI_LIBCRUN=0; false:
   * every crun command execs crun (a `crunPath` that wraps crun must: the built-in bypasses it).
   */
  libcrun?: boolean;
  /** Parent cgroup of every slot: `/<cgroupParent>/slot-<n>/<container>`. */
  cgroupParent?: string;
  /** Grace between SIGTERM and SIGKILL when a step times out. */
  timeoutGraceMs?: number;
  /** containers-common style profile to convert; default /usr/share/containers/seccomp.json. */
  seccompProfilePath?: string;
  /** `bpf` (default): load a precompiled filter; `json`: let crun compile the profile per start. */
  seccompMode?: "bpf" | "json";
  /** AppArmor profile applied where AppArmor is enabled and the profile is loaded. */
  apparmorProfile?: string;
  /** Name resolution of the egress proxy (default: the host's resolver). */
  resolveHost?: ResolveHost;
  /** Cache volumes, one dir per (scope, key); default `<cacheDir>/caches`. */
  cacheRoot?: string;
  /** Called with the duration of each phase of create and dispose (benchmarks). */
  trace?: (phase: string, ms: number) => void;
  /** Short-path dir for the egress proxies' unix sockets (108-byte limit). */
  socketDir?: string;
  /** `host[:port]` of image registries pulled from without TLS verification (plain HTTP, self-signed); default none. */
  insecureRegistries?: readonly string[];
  /** Bound on one registry image pull; default `defaults.imagePullTimeoutMs`. */
  imagePullTimeoutMs?: number;
  /** Local OCI layouts and archives a job may name must be below one of these (default `<cacheDir>/images`). */
  imageRoots?: readonly string[];
  /**
   * As soon as a slot's sandbox is disposed of, make the slot's next job dir and disk in the
   * background (spare-disks.ts), so that a build in the slot (a prewarm, or a cold create) starts
   * at its container. For a long-lived factory that serves many jobs per slot (the runner host);
   * default false (a one-job runner process would throw it away).
   */
  spareDisks?: boolean;
}

export interface Prepared {
  crun: CrunCli;
  layout: CgroupLayout;
  helper: NativeTool;
  etcDir: string;
  /** The read-only root skeleton shared by host-image jobs without extra mount points (host-rootfs.ts). */
  hostSkeletonDir: string;
  /** The mounts that fill a host-image root: the same for every job. */
  hostMounts: OciMount[];
  nsLevel: number;
  seccomp: PreparedSeccomp;
  apparmor: string | null;
  /** The host-side disk tool (native/disk-tool.c). */
  diskTool: HostTool;
  /** How crun and the disk tool run: the resident spawner. */
  commands: HostCommands;
}

export class CrunSandboxFactory implements SandboxFactory {
  readonly isolation = "oci" as const;
  private prepared: Promise<Prepared> | null = null;
  private readonly warm = new WarmPool<CrunSandbox>();
  /** Slots this factory vouches for, and the teardowns still running in them. */
  private readonly ledger = new SlotLedger();
  private readonly templates: DiskTemplates;
  private readonly spares: SpareDisks | null;
  /** Aborts the prewarm builds still running when the factory is closed (an image pull can be long). */
  private closing = new AbortController();
  private readonly cacheDir: string;
  private readonly cgroupParent: string;
  private readonly socketDir: string;
  private readonly cacheRoot: string;
  /** Per slot, its transparent egress path (made by the slot's first transparent job, kept until the slot is reaped or the factory closed). */
  private readonly egressPaths = new Map<number, Promise<TransparentEgress>>();

  constructor(private readonly opts: CrunSandboxOptions) {
    this.cacheDir = opts.cacheDir ?? defaults.sandboxCacheDir;
    this.cgroupParent = opts.cgroupParent ?? "deltaci";
    this.socketDir = opts.socketDir ?? "/run/deltaci/egress";
    this.cacheRoot = opts.cacheRoot ?? join(this.cacheDir, "caches");
    this.templates = new DiskTemplates(join(this.cacheDir, "disk-templates"), async () => (await this.prepare()).diskTool.path);
    this.spares = opts.spareDisks === true ? new SpareDisks({
      make: async (slot, sizeMiB, dir) => makeJobDir({ prepared: await this.prepare(), templates: this.templates }, slot, sizeMiB, dir, false),
      remove: async (dir) => void (await removeJobFiles({ clock: opts.clock, diskTool: (await this.prepare()).diskTool }, dir)),
    }, opts.logger) : null;
  }

  /** One-time work (building helpers, detecting cgroups); `create` calls it, callers may warm up early. */
  prepare(): Promise<Prepared> {
    this.prepared ??= this.doPrepare().catch((e: unknown) => {
      this.prepared = null;
      throw e;
    });
    return this.prepared;
  }

  private async doPrepare(): Promise<Prepared> {
    await mkdir(this.cacheDir, { recursive: true, mode: 0o755 });
    await chmod(this.cacheDir, 0o755);
    const layout = detectCgroupLayout();
    await assertCgroupSupport(layout);
    const crunPath = this.opts.crunPath ?? "crun";
    const [helper, diskTool, spawner] = await Promise.all([buildSandboxHelper(this.cacheDir), buildDiskTool(this.cacheDir), buildSpawner(this.cacheDir, (this.opts.libcrun ?? process.env.DELTACI_LIBCRUN !== "0") ? crunPath : null)]);
    if (spawner.noBuiltinCrun !== undefined) this.opts.logger.info({ reason: spawner.noBuiltinCrun }, "libcrun is not linked into the spawner: it execs crun");
    // The spawner runs the disk tool's work in its forked child (disk-ops.h): no exec per mount or
    // unmount; and, linked with libcrun, crun's `run -d` and `delete -f` (crun-builtin.h).
    const builtins = new Map([[diskTool.path, "disk-tool"], ...(spawner.builtinCrun ? [[crunPath, "crun"] as const] : [])]);
    const commands = new ResidentSpawner(spawner.path, this.opts.logger, builtins);
    const unified = layout.kind === "v1" ? layout.hybridUnified : null;
    const hide = unified !== null ? { dir: unified, wrapper: [helper.path, "unshare-cgroup2", unified] } : null;
    if (unified !== null) this.opts.logger.info({ unified }, "hybrid cgroups: crun runs in a private mount namespace without the cgroup2 mount");
    const stateRoot = this.opts.stateRoot ?? "/run/deltaci/crun";
    await mkdir(stateRoot, { recursive: true, mode: 0o700 });
    const crun = new CrunCli(crunPath, stateRoot, hide, commands);
    const etcDir = await hostEtc(this.cacheDir);
    const hostSkeletonDir = await sharedHostSkeleton(this.cacheDir);
    const nsLine = readFileSync("/proc/self/status", "utf8").split("\n").find((l) => l.startsWith("NSpid:")) ?? "NSpid:\t1";
    const nsLevel = nsLine.trim().split(/\s+/).length - 1;
    const seccomp = await prepareSeccomp(this.cacheDir, this.opts.seccompProfilePath ?? "/usr/share/containers/seccomp.json", CONTAINER_CAPS, this.opts.logger);
    const apparmor = await detectAppArmor(this.opts.apparmorProfile ?? DEFAULT_APPARMOR_PROFILE, this.opts.logger);
    return { crun, layout, helper, etcDir, hostSkeletonDir, hostMounts: hostRootfsMounts(etcDir), nsLevel, seccomp, apparmor, diskTool: hostTool(commands, diskTool.path), commands };
  }

  private cgroupPath(slot: SlotInfo, containerId: string | null): string {
    const base = `/${this.cgroupParent}/slot-${slot.index}`;
    return containerId === null ? base : `${base}/${containerId}`;
  }

  async create(spec: SandboxSpec, signal?: AbortSignal): Promise<Sandbox> {
    const warm = this.warm.take(warmKey(spec), spec.slot.index);
    let prebuilt = warm === null ? null : await warm;
    if (prebuilt !== null && !prebuilt.alive) {
      this.opts.logger.warn({ jobId: spec.jobId, sandbox: prebuilt.jobId }, "the prewarmed sandbox died while it waited: building a new one");
      await prebuilt.dispose();
      prebuilt = null;
    }
    if (prebuilt !== null) this.opts.logger.info({ jobId: spec.jobId, sandbox: prebuilt.jobId }, "took a prewarmed sandbox");
    const sb = prebuilt ?? (await this.build(spec, signal));
    sb.adopt(spec.jobId);
    try {
      signal?.throwIfAborted();
      const uid = spec.slot.hostUidBase;
      if (spec.sourceArchive !== null) await extractSourceArchive(spec.sourceArchive, sb.workspaceOnHost, { owner: { uid, gid: uid } });
      return sb;
    } catch (e) {
      await sb.dispose();
      if (e instanceof DeltaError) throw e;
      throw new DeltaError("E_SANDBOX", `cannot create the sandbox: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
  }

  /** Builds a sandbox for jobs shaped like `spec` in the background; `create` takes it when the job matches. */
  async prewarm(spec: WarmSpec): Promise<void> {
    const key = warmKey(spec);
    if (key === null || this.warm.has(key)) return;
    const jobId = `warm-${randomBytes(6).toString("hex")}`;
    const closed = this.closing.signal;
    const building = this.build({ ...spec, jobId, sourceArchive: null, auditLogPath: null }, closed).catch((e: unknown) => {
      if (closed.aborted) return null; // closed while it was built: nothing to report
      this.opts.logger.warn({ err: e instanceof Error ? e.message : String(e) }, "prewarming a sandbox failed: the next job builds its own");
      return null;
    });
    this.warm.add(key, spec.slot.index, building);
    await building;
  }

  isSlotClean(slot: SlotInfo): boolean {
    return this.ledger.isClean(slot.index);
  }

  settle(slot: SlotInfo): Promise<void> {
    return this.ledger.settle(slot.index);
  }

  async close(): Promise<void> {
    this.closing.abort();
    this.closing = new AbortController(); // later prewarms (a factory may be used again) are not affected
    await this.warm.close();
    await this.ledger.settleAll();
    await this.spares?.discardAll();
    await Promise.all([...this.egressPaths.keys()].map((i) => this.removeEgressPath(i)));
    await (await this.prepared?.catch(() => null))?.commands.close();
  }

  /** The slot's path: the one made before while its veth and netns are still there, else a new one. */
  private async egressPath(slot: SlotInfo): Promise<TransparentEgress> {
    const kept = await this.egressPaths.get(slot.index)?.catch(() => null);
    if (kept?.intact() === true) return kept;
    if (kept !== undefined) await this.removeEgressPath(slot.index);
    const made = TransparentEgress.forSlot(slot.index);
    this.egressPaths.set(slot.index, made);
    made.catch(() => this.egressPaths.delete(slot.index)); // the next job tries again (forSlot cleaned up)
    return made;
  }

  /** Disposes of the slot's transparent egress path, or reaps what a dead runner left for it. */
  private async removeEgressPath(index: number): Promise<string[]> {
    const made = this.egressPaths.get(index);
    this.egressPaths.delete(index);
    const te = made === undefined ? null : await made.catch(() => null);
    if (te !== null) await te.dispose();
    else if (TransparentEgress.present(index)) await TransparentEgress.reap(index);
    return te !== null ? [`transparent egress of slot ${index}`] : [];
  }

  private async build(spec: SandboxSpec, signal?: AbortSignal): Promise<CrunSandbox> {
    const env: BuildEnv = {
      prepared: await this.prepare(),
      opts: this.opts,
      cacheDir: this.cacheDir,
      cacheRoot: this.cacheRoot,
      socketDir: this.socketDir,
      cgroupParent: this.cgroupParent,
      ledger: this.ledger,
      templates: this.templates,
      spares: this.spares,
      transparentEgress: (slot) => this.egressPath(slot),
      marker: () => this.marker(),
    };
    return buildSandbox(env, spec, signal);
  }

  private marker(): (phase: string | null) => void {
    const trace = this.opts.trace;
    if (!trace) return () => {};
    let last = performance.now();
    return (phase) => {
      const now = performance.now();
      if (phase !== null) trace(phase, now - last);
      last = now;
    };
  }

  /**
   * What a slot holds on the host (containers, cgroups, mounts, loop devices, dirs), once its
   * background teardowns have ended (`settle`); empty when clean.
   */
  async inspectSlot(slot: SlotInfo): Promise<string[]> {
    await this.ledger.settle(slot.index);
    const p = await this.prepare();
    const found: string[] = [];
    for (const id of await p.crun.list()) if (id.startsWith(slotPrefix(slot.index))) found.push(`container ${id}`);
    for (const dir of cgroupDirs(p.layout, this.cgroupPath(slot, null))) {
      const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
      for (const e of entries) if (e.isDirectory()) found.push(`cgroup ${join(dir, e.name)}`);
    }
    for (const mp of await mountsBelow(slot.workDir)) found.push(`mount ${mp}`);
    for (const dev of await loopDevicesBelow(slot.workDir)) found.push(`loop ${dev}`);
    for (const name of await readdir(this.socketDir).catch(() => [])) if (name.startsWith(slotPrefix(slot.index))) found.push(`dir ${join(this.socketDir, name)}`);
    const names = await readdir(slot.workDir).catch(() => []);
    for (const name of names) if (isJobDirName(name)) found.push(`dir ${join(slot.workDir, name)}`);
    return found;
  }

  /** Removes per-slot image copies that versions before shared images unpacked for a slot's uid range. */
  async pruneImages(slot: SlotInfo): Promise<string[]> {
    const dir = join(this.cacheDir, "images", "unpacked");
    const removed: string[] = [];
    for (const name of await readdir(dir).catch(() => [])) {
      if (!name.endsWith(`-${slot.hostUidBase}`)) continue;
      await rm(join(dir, name), { recursive: true, force: true });
      removed.push(join(dir, name));
    }
    return removed;
  }

  async reapSlot(slot: SlotInfo): Promise<string[]> {
    await this.warm.discardSlot(slot.index); // a warm sandbox must not be reaped from under the pool
    await this.ledger.settle(slot.index); // nor a teardown still running
    await this.spares?.discard(slot.index);
    const p = await this.prepare();
    const td: TeardownContext = { crun: p.crun, layout: p.layout, clock: this.opts.clock, nsLevel: p.nsLevel, diskTool: p.diskTool };
    const removed: string[] = [];
    for (const id of await p.crun.list()) {
      if (id.startsWith(slotPrefix(slot.index))) removed.push(...(await removeContainer(td, id, this.cgroupPath(slot, id))));
    }
    for (const dir of await removeCgroupTree(p.layout, this.cgroupPath(slot, null))) removed.push(`cgroup ${dir}`);
    removed.push(...(await this.removeEgressPath(slot.index)));
    for (const name of await readdir(this.socketDir).catch(() => [])) {
      if (name.startsWith(slotPrefix(slot.index))) removed.push(...(await removeJobFiles(td, join(this.socketDir, name))), `dir ${join(this.socketDir, name)}`);
    }
    if (existsSync(slot.workDir)) {
      for (const name of await readdir(slot.workDir)) {
        if (isJobDirName(name)) removed.push(...(await removeJobFiles(td, join(slot.workDir, name))), `dir ${join(slot.workDir, name)}`);
      }
    }
    this.ledger.vouch(slot.index);
    return removed;
  }
}
