/**
 * The `oci` backend: one hardened crun container per job (see docs/sandbox.md). `create` builds
 * the job's disk, root file system, bundle and container; `dispose` and `reapSlot` remove them.
 */
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { chmod, chown, mkdir, readdir, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Clock } from "../../base/clock.ts";
import { DeltaError } from "../../base/errors.ts";
import { defaults } from "../../config/defaults.ts";
import { containerName, isJobDirName, jobDirName, slotPrefix } from "../job-names.ts";
import { extractSourceArchive } from "../source-archive.ts";
import type { Sandbox, SandboxFactory, SandboxLogger, SandboxSpec, SlotInfo, WarmSpec } from "../types.ts";
import { WarmPool, warmKey } from "../warm-pool.ts";
import { detectAppArmor, DEFAULT_APPARMOR_PROFILE } from "./apparmor.ts";
import { bindMount, bundleConfig, CONTAINER_CAPS, type OciMount } from "./bundle.ts";
import { prepareSeccomp, type PreparedSeccomp } from "./seccomp-bpf.ts";
import { defaultResolve, EgressProxy, type ResolveHost } from "./egress-proxy.ts";
import { assertCgroupSupport, cgroupDirs, detectCgroupLayout, JobCgroup, removeCgroupTree, type CgroupLayout } from "./cgroups.ts";
import { CrunCli } from "./crun-cli.ts";
import { InitChannel } from "./init-channel.ts";
import { CrunSandbox, HOME, HELPER_IN_SANDBOX, WORKSPACE } from "./crun-sandbox.ts";
import { hostEtc, hostRootfs } from "./host-rootfs.ts";
import { mountImageForSlot, mountOverlay, unpackImage } from "./oci-image.ts";
import { prepareCaches, saveCaches, type WritableCache } from "./caches.ts";
import { createJobDisk, loopDevicesBelow, mountsBelow } from "./job-disk.ts";
import { buildSandboxHelper, type NativeTool } from "./native-tools.ts";
import { killCgroup, removeContainer, removeJobFiles, type TeardownContext } from "./teardown.ts";

export interface CrunSandboxOptions {
  clock: Clock;
  logger: SandboxLogger;
  /** Built helpers, generated /etc, unpacked images, compiled seccomp filters. */
  cacheDir?: string;
  /** crun `--root`. */
  stateRoot?: string;
  crunPath?: string;
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
}

/** Port of the egress proxy inside a job's network namespace. */
export const PROXY_PORT = 3128;

export interface Prepared {
  crun: CrunCli;
  layout: CgroupLayout;
  helper: NativeTool;
  etcDir: string;
  nsLevel: number;
  seccomp: PreparedSeccomp;
  apparmor: string | null;
}

/** The sandbox's root maps to an unprivileged uid: it must be able to reach the job dir. */
async function assertTraversable(dir: string): Promise<void> {
  for (let d = dir; d !== dirname(d); d = dirname(d)) {
    const st = await stat(d);
    if ((st.mode & 0o001) === 0) throw new DeltaError("E_SANDBOX", `slot work dir ${dir}: ${d} is not traversable by others (mode ${(st.mode & 0o777).toString(8)})`);
  }
}

export class CrunSandboxFactory implements SandboxFactory {
  readonly isolation = "oci" as const;
  private prepared: Promise<Prepared> | null = null;
  private readonly warm = new WarmPool<CrunSandbox>();
  /** Aborts the prewarm builds still running when the factory is closed (an image pull can be long). */
  private closing = new AbortController();
  private readonly cacheDir: string;
  private readonly cgroupParent: string;
  private readonly socketDir: string;
  private readonly cacheRoot: string;

  constructor(private readonly opts: CrunSandboxOptions) {
    this.cacheDir = opts.cacheDir ?? defaults.sandboxCacheDir;
    this.cgroupParent = opts.cgroupParent ?? "deltaci";
    this.socketDir = opts.socketDir ?? "/run/deltaci/egress";
    this.cacheRoot = opts.cacheRoot ?? join(this.cacheDir, "caches");
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
    const helper = await buildSandboxHelper(this.cacheDir);
    const unified = layout.kind === "v1" ? layout.hybridUnified : null;
    const wrapper = unified !== null ? [helper.path, "unshare-cgroup2", unified] : [];
    if (unified !== null) this.opts.logger.info({ unified }, "hybrid cgroups: crun runs in a private mount namespace without the cgroup2 mount");
    const stateRoot = this.opts.stateRoot ?? "/run/deltaci/crun";
    await mkdir(stateRoot, { recursive: true, mode: 0o700 });
    const crun = new CrunCli(this.opts.crunPath ?? "crun", stateRoot, wrapper);
    const etcDir = await hostEtc(this.cacheDir);
    const nsLine = readFileSync("/proc/self/status", "utf8").split("\n").find((l) => l.startsWith("NSpid:")) ?? "NSpid:\t1";
    const nsLevel = nsLine.trim().split(/\s+/).length - 1;
    const seccomp = await prepareSeccomp(this.cacheDir, this.opts.seccompProfilePath ?? "/usr/share/containers/seccomp.json", CONTAINER_CAPS, this.opts.logger);
    const apparmor = await detectAppArmor(this.opts.apparmorProfile ?? DEFAULT_APPARMOR_PROFILE, this.opts.logger);
    return { crun, layout, helper, etcDir, nsLevel, seccomp, apparmor };
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

  close(): Promise<void> {
    this.closing.abort();
    this.closing = new AbortController(); // later prewarms (a factory may be used again) are not affected
    return this.warm.close();
  }

  private async build(spec: SandboxSpec, signal?: AbortSignal): Promise<CrunSandbox> {
    const p = await this.prepare();
    const containerId = containerName(spec.slot.index, spec.jobId);
    const jobDir = join(spec.slot.workDir, jobDirName(spec.jobId));
    const cgroupPath = this.cgroupPath(spec.slot, containerId);
    const td: TeardownContext = { crun: p.crun, layout: p.layout, clock: this.opts.clock, nsLevel: p.nsLevel };
    const sockDir = join(this.socketDir, containerId);
    let proxy: EgressProxy | null = null;
    let channel: InitChannel | null = null;
    let writableCaches: WritableCache[] = [];
    let started = false;
    let tornDown: Promise<void> | null = null;
    const mark = this.marker();
    const teardown = (jobId: string) => (tornDown ??= (async () => {
      mark(null);
      // Kill every process of the job first (the init too): then `crun delete` and the unmounting
      // of the job's file systems no longer depend on each other and run side by side.
      await killCgroup(td, cgroupPath);
      channel?.close();
      mark("dispose: kill");
      const [fromCrun, fromFiles] = await Promise.all([
        removeContainer(td, containerId, cgroupPath),
        (async () => {
          const saved = started && writableCaches.length > 0 ? await saveCaches(writableCaches, spec.secretValues ?? [], spec.slot.hostUidBase, this.opts.logger) : [];
          await proxy?.close();
          return [...saved.map((k) => `saved cache ${k}`), ...(await removeJobFiles(td, jobDir)), ...(await removeJobFiles(td, sockDir))];
        })(),
      ]);
      const removed = [...fromCrun, ...fromFiles];
      mark("dispose: crun delete | unmount + remove files");
      this.opts.logger.info({ jobId, removed: removed.length }, "sandbox disposed");
    })());
    try {
      mark(null);
      signal?.throwIfAborted();
      // a predecessor that crashed without a reap may have left this job's container behind
      if (existsSync(join(p.crun.stateRoot, containerId))) await removeContainer(td, containerId, cgroupPath);
      await removeJobFiles(td, jobDir);
      await mkdir(jobDir, { recursive: true, mode: 0o755 });
      await chmod(spec.slot.workDir, 0o711); // traversable for the sandbox's uids, not listable by host users
      await assertTraversable(spec.slot.workDir);
      const uid = spec.slot.hostUidBase;
      const diskMount = join(jobDir, "disk");
      mark("create: job dir");
      await createJobDisk(join(jobDir, "disk.img"), diskMount, spec.limits.diskMiB);
      mark("create: disk image + mkfs + mount");
      for (const d of ["workspace", "home"]) {
        await mkdir(join(diskMount, d), { mode: 0o755 });
        await chown(join(diskMount, d), uid, uid);
      }
      await mkdir(join(jobDir, "steps"), { mode: 0o755 });
      await mkdir(join(jobDir, "bundle"), { mode: 0o700 });
      signal?.throwIfAborted();
      const rootfs = join(jobDir, "rootfs");
      const mounts: OciMount[] = [];
      const extraEnv: Record<string, string> = {};
      let hasBash = existsSync("/usr/bin/bash") || existsSync("/bin/bash");
      let rootReadonly = true;
      const caches = await prepareCaches(this.cacheRoot, spec.caches, WORKSPACE, uid, jobDir, diskMount);
      writableCaches = caches.writable;
      const skeletonPoints = caches.targets.filter((t) => !t.startsWith(WORKSPACE + "/") && !t.startsWith(HOME + "/") && t !== HOME);
      if (spec.image.kind === "host") mounts.push(...(await hostRootfs(rootfs, p.etcDir, skeletonPoints)));
      else {
        const pull = { insecureRegistries: this.opts.insecureRegistries ?? [], signal, ...(this.opts.imagePullTimeoutMs !== undefined ? { timeoutMs: this.opts.imagePullTimeoutMs } : {}) };
        const img = await unpackImage(this.cacheDir, spec.image.ref, spec.image.digest, pull, this.opts.imageRoots ?? [join(this.cacheDir, "images")]);
        for (const d of ["upper", "work"]) await mkdir(join(diskMount, d), { mode: 0o755 });
        await chown(join(diskMount, "upper"), uid, uid);
        const lower = join(jobDir, "image");
        await mountImageForSlot(p.helper.path, img.rootfs, lower, uid, spec.slot.uidCount);
        await mountOverlay(lower, join(diskMount, "upper"), join(diskMount, "work"), rootfs);
        for (const kv of img.env) {
          const eq = kv.indexOf("=");
          if (eq > 0) extraEnv[kv.slice(0, eq)] = kv.slice(eq + 1);
        }
        hasBash = img.hasBash;
        rootReadonly = false;
      }
      mounts.push(
        bindMount(join(diskMount, "workspace"), WORKSPACE, false),
        bindMount(join(diskMount, "home"), HOME, false),
        bindMount(p.helper.dir, "/.deltaci/bin", true),
        bindMount(join(jobDir, "steps"), "/.deltaci/steps", true),
        ...caches.mounts,
      );
      const initArgs = [HELPER_IN_SANDBOX, "init", "3"];
      if (spec.network.egress === "allowlist") {
        await mkdir(this.socketDir, { recursive: true, mode: 0o755 });
        await mkdir(sockDir, { mode: 0o750 });
        await chown(sockDir, 0, uid); // only this job's sandbox (its gid range) may reach the proxy
        proxy = await EgressProxy.start({
          socketPath: join(sockDir, "egress.sock"),
          jobId: spec.jobId,
          allow: spec.network.allow,
          auditLogPath: spec.auditLogPath,
          resolve: this.opts.resolveHost ?? defaultResolve,
          logger: this.opts.logger,
        });
        mounts.push(bindMount(sockDir, "/.deltaci/run", true));
        initArgs.push(String(PROXY_PORT), "/.deltaci/run/egress.sock");
        const url = `http://127.0.0.1:${PROXY_PORT}`;
        Object.assign(extraEnv, { http_proxy: url, https_proxy: url, HTTP_PROXY: url, HTTPS_PROXY: url, no_proxy: "localhost,127.0.0.1,::1", NO_PROXY: "localhost,127.0.0.1,::1" });
      }
      const config = bundleConfig({
        rootfs,
        rootReadonly,
        hostname: "sandbox",
        uidBase: uid,
        uidCount: spec.slot.uidCount,
        cgroupsPath: cgroupPath,
        memoryMiB: spec.limits.memoryMiB,
        pids: spec.limits.pids,
        cpus: spec.limits.cpus,
        tmpMiB: Math.max(16, Math.min(spec.limits.memoryMiB, 1024)),
        mounts,
        initArgs,
        env: ["PATH=/usr/bin:/bin"],
        seccomp: p.seccomp.profile,
        annotations: {
          "org.deltaci.job": spec.jobId,
          ...(p.seccomp.bpfBase64 !== null && this.opts.seccompMode !== "json" ? { "run.oci.seccomp_bpf_data": p.seccomp.bpfBase64 } : {}),
        },
        apparmorProfile: p.apparmor,
      });
      await writeFile(join(jobDir, "bundle", "config.json"), JSON.stringify(config));
      mark("create: rootfs + bundle");
      signal?.throwIfAborted();
      channel = new InitChannel(await p.crun.runDetachedWithChannel(["--no-new-keyring", "--bundle", join(jobDir, "bundle"), containerId], "starting the job container"));
      mark("create: crun run -d");
      started = true;
      return new CrunSandbox(
        {
          jobId: spec.jobId,
          containerId,
          jobDir,
          diskMount,
          cgroup: new JobCgroup(p.layout, cgroupPath),
          uidBase: uid,
          hasBash,
          extraEnv,
          limits: { memoryMiB: spec.limits.memoryMiB, pids: spec.limits.pids, diskMiB: spec.limits.diskMiB },
        },
        { channel, clock: this.opts.clock, logger: this.opts.logger, nsLevel: p.nsLevel, timeoutGraceMs: this.opts.timeoutGraceMs ?? 2000, teardown },
      );
    } catch (e) {
      await teardown(spec.jobId).catch((te: unknown) => this.opts.logger.warn({ jobId: spec.jobId, err: String(te) }, "cleanup after a failed create failed"));
      if (e instanceof DeltaError) throw e;
      throw new DeltaError("E_SANDBOX", `cannot create the sandbox: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
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

  /** What a slot holds on the host (containers, cgroups, mounts, loop devices, dirs); empty when clean. */
  async inspectSlot(slot: SlotInfo): Promise<string[]> {
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
    const p = await this.prepare();
    const td: TeardownContext = { crun: p.crun, layout: p.layout, clock: this.opts.clock, nsLevel: p.nsLevel };
    const removed: string[] = [];
    for (const id of await p.crun.list()) {
      if (id.startsWith(slotPrefix(slot.index))) removed.push(...(await removeContainer(td, id, this.cgroupPath(slot, id))));
    }
    for (const dir of await removeCgroupTree(p.layout, this.cgroupPath(slot, null))) removed.push(`cgroup ${dir}`);
    for (const name of await readdir(this.socketDir).catch(() => [])) {
      if (name.startsWith(slotPrefix(slot.index))) removed.push(...(await removeJobFiles(td, join(this.socketDir, name))), `dir ${join(this.socketDir, name)}`);
    }
    if (existsSync(slot.workDir)) {
      for (const name of await readdir(slot.workDir)) {
        if (isJobDirName(name)) removed.push(...(await removeJobFiles(td, join(slot.workDir, name))), `dir ${join(slot.workDir, name)}`);
      }
    }
    return removed;
  }
}
