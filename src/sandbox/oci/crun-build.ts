/**
 * Building one job container (`buildSandbox`) and its teardown, in two parts: the part `dispose()`
 * waits for (the job's processes killed, writable caches saved, the job dir moved off its path)
 * and the rest (crun's state and cgroups, unmounting, loop devices, files), run in the background
 * and tracked by the factory's slot ledger. See docs/sandbox.md.
 */
import { assertTraversableSync } from "../slots.ts";
import { randomBytes } from "node:crypto";
import { chmodSync, chownSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { chown, mkdir, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DeltaError } from "../../base/errors.ts";
import { containerName, jobDirName } from "../job-names.ts";
import type { SlotLedger } from "../slot-ledger.ts";
import type { SandboxSpec, SlotInfo } from "../types.ts";
import { bindMount, bundleConfig, type OciMount } from "./bundle.ts";
import { prepareCaches, saveCaches, type WritableCache } from "./caches.ts";
import { JobCgroup } from "./cgroups.ts";
import { CrunSandbox, HELPER_IN_SANDBOX, HOME, stepScriptName, WORKSPACE } from "./crun-sandbox.ts";
import type { CrunSandboxOptions, Prepared } from "./crun-sandbox-factory.ts";
import type { DiskTemplates } from "./disk-template.ts";
import { defaultResolve, EgressProxy } from "./egress-proxy.ts";
import { hostSkeleton } from "./host-rootfs.ts";
import { InitChannel } from "./init-channel.ts";
import { createJobDisk } from "./job-disk.ts";
import type { SpareDisks } from "./spare-disks.ts";
import { mountImageForSlot, mountOverlay, unpackImage } from "./oci-image.ts";
import { transparentNames, transparentResolvConf, type EgressAttachment, type TransparentEgress } from "./transparent-egress.ts";
import { forgetContainer, killCgroup, removeContainer, removeJobFiles, removeSlotCgroup, type TeardownContext } from "./teardown.ts";

/** Port of the egress proxy inside a job's network namespace. */
export const PROXY_PORT = 3128;

export interface BuildEnv {
  prepared: Prepared;
  opts: CrunSandboxOptions;
  cacheDir: string;
  cacheRoot: string;
  socketDir: string;
  cgroupParent: string;
  ledger: SlotLedger;
  templates: DiskTemplates;
  /** The slots' spare job disks, or null when the factory keeps none (option `spareDisks`). */
  spares: SpareDisks | null;
  /** The slot's transparent egress path, made on first use and kept for the slot's next jobs. */
  transparentEgress(slot: SlotInfo): Promise<TransparentEgress>;
  /** Phase timings (`trace` option): `mark(null)` starts a phase, `mark(name)` ends it. */
  marker(): (phase: string | null) => void;
}

/**
 * A job dir with its disk (a pristine copy of the template) mounted, the workspace and home on it,
 * and the steps and bundle dirs. On a job's path (`onJobPath`) the small steps are synchronous: a
 * thread-pool round trip each would wait for a turn of a busy event loop (`deltaci run` builds its
 * first sandbox while its server starts). Off it (a spare disk) they go to the thread pool, side
 * by side: the mkdirs on the fresh file system block for ~0.5 ms each (a runner host's
 * profile: 2.6 ms per job), and the event loop serves every session of the host.
 */
export async function makeJobDir(env: Pick<BuildEnv, "prepared" | "templates">, slot: SlotInfo, diskMiB: number, jobDir: string, onJobPath: boolean): Promise<void> {
  const uid = slot.hostUidBase;
  const diskMount = join(jobDir, "disk");
  const home = join(diskMount, "home");
  const workspace = join(diskMount, "workspace");
  if (onJobPath) mkdirSync(jobDir, { recursive: true, mode: 0o755 });
  else await mkdir(jobDir, { recursive: true, mode: 0o755 });
  await createJobDisk(env.templates, env.prepared.diskTool, join(jobDir, "disk.img"), diskMount, diskMiB);
  if (onJobPath) {
    for (const d of [workspace, home]) {
      mkdirSync(d, { mode: 0o755 });
      chownSync(d, uid, uid);
    }
    mkdirSync(join(jobDir, "steps"), { mode: 0o755 });
    // The first step's script file, empty: its start then writes into it and allocates no inode
    // (0.5–1 ms of CPU on a busy ext4, on the lease-to-step path; docs/sandbox.md).
    writeFileSync(join(jobDir, "steps", stepScriptName(1)), "", { mode: 0o644 });
    mkdirSync(join(jobDir, "bundle"), { mode: 0o700 });
    return;
  }
  await Promise.all([
    ...[workspace, home].map(async (d) => {
      await mkdir(d, { mode: 0o755 });
      await chown(d, uid, uid);
    }),
    mkdir(join(jobDir, "steps"), { mode: 0o755 }).then(() => writeFile(join(jobDir, "steps", stepScriptName(1)), "", { mode: 0o644 })),
    mkdir(join(jobDir, "bundle"), { mode: 0o700 }),
  ]);
}

export async function buildSandbox(env: BuildEnv, spec: SandboxSpec, signal?: AbortSignal): Promise<CrunSandbox> {
  const { prepared: p, opts, ledger } = env;
  const slot = spec.slot;
  const containerId = containerName(slot.index, spec.jobId);
  const jobDir = join(slot.workDir, jobDirName(spec.jobId));
  const slotCgroup = `/${env.cgroupParent}/slot-${slot.index}`;
  const cgroupPath = `${slotCgroup}/${containerId}`;
  const td: TeardownContext = { crun: p.crun, layout: p.layout, clock: opts.clock, nsLevel: p.nsLevel, diskTool: p.diskTool };
  const sockDir = join(env.socketDir, containerId);
  let proxy: EgressProxy | null = null;
  let attachment: EgressAttachment | null = null;
  let channel: InitChannel | null = null;
  let writableCaches: WritableCache[] = [];
  let started = false;
  let stopping: Promise<{ rest: Promise<void>; killed: boolean }> | null = null;
  const mark = env.marker();
  ledger.acquire(slot.index);

  /** The rest of the teardown, in the background: nothing of it can reach or be reached by a job. */
  const removeAll = async (jobId: string, dir: string, killed: boolean): Promise<void> => {
    const [fromCrun, fromFiles] = await Promise.all([
      killed ? forgetContainer(td, containerId, cgroupPath) : removeContainer(td, containerId, cgroupPath),
      // the job's disk was mounted by this factory (spare or build) and is still: its loop device is in the mount table
      (async () => [...(await removeJobFiles(td, dir, "mounted")), ...(await removeJobFiles(td, sockDir))])(),
    ]);
    mark("teardown: forget container | unmount + remove files");
    if (ledger.release(slot.index) === 0) await ledger.whenEmpty(slot.index, () => removeSlotCgroup(p.layout, slotCgroup));
    opts.logger.info({ jobId, removed: fromCrun.length + fromFiles.length }, "sandbox torn down");
  };

  /** Kills the job and takes its files off their path; resolves with the rest, running in the background. */
  const stop = (jobId: string) => (stopping ??= (async () => {
    mark(null);
    // Every process of the job dies first (the init too): the rest then depends on nothing alive.
    const killed = await killCgroup(td, cgroupPath);
    channel?.close();
    mark("dispose: kill");
    const saved = started && writableCaches.length > 0 ? await saveCaches(writableCaches, spec.secretValues ?? [], slot.hostUidBase, opts.logger) : [];
    attachment?.detach(); // the job's transparent connections close; the slot's path stays for its next job
    await proxy?.close();
    // The job's workspace leaves its path now (a rename moves the mounts below it along).
    const gone = join(slot.workDir, jobDirName(`disposed-${randomBytes(8).toString("hex")}`));
    const dir = await rename(jobDir, gone).then(() => gone, () => jobDir);
    mark("dispose: caches + move off path");
    if (saved.length > 0) opts.logger.info({ jobId, saved }, "saved caches");
    mark(null);
    return { rest: removeAll(jobId, dir, killed), killed };
  })());

  /**
   * dispose(): waits for the kill; the rest is tracked by the ledger (settle, reapSlot, close wait
   * for it). Processes that outlived the kill's bound make dispose wait for all of it.
   */
  const teardown = async (jobId: string): Promise<void> => {
    const { rest, killed } = await stop(jobId);
    env.spares?.prepare(slot, spec.limits.diskMiB); // the slot is free: its next job dir, off every job's path
    const logged = rest.catch((e: unknown) => {
      opts.logger.warn({ jobId, err: e instanceof Error ? e.message : String(e) }, "sandbox teardown failed: the slot needs a reap");
      throw e;
    });
    ledger.track(slot.index, logged);
    if (!killed) {
      opts.logger.warn({ jobId }, "processes of the job outlived SIGKILL: dispose waits for crun delete");
      await logged.catch(() => {});
    }
  };

  try {
    mark(null);
    signal?.throwIfAborted();
    // a predecessor that crashed without a reap may have left this job's container behind
    if (existsSync(join(p.crun.stateRoot, containerId))) await removeContainer(td, containerId, cgroupPath);
    await removeJobFiles(td, jobDir);
    // small metadata calls on this thread: a thread-pool round trip each cost more than the call
    mkdirSync(slot.workDir, { recursive: true, mode: 0o711 });
    chmodSync(slot.workDir, 0o711); // traversable for the sandbox's uids, not listable by host users
    assertTraversableSync(slot.workDir);
    const uid = slot.hostUidBase;
    const diskMount = join(jobDir, "disk");
    mark("create: job dir");
    const fromSpare = env.spares !== null && (await env.spares.take(slot, spec.limits.diskMiB, jobDir));
    if (fromSpare) mark("create: spare job dir taken");
    else {
      await makeJobDir(env, slot, spec.limits.diskMiB, jobDir, true);
      mark("create: disk image from template + mount");
    }
    signal?.throwIfAborted();
    let rootfs = join(jobDir, "rootfs");
    const mounts: OciMount[] = [];
    const extraEnv: Record<string, string> = {};
    let hasBash = existsSync("/usr/bin/bash") || existsSync("/bin/bash");
    let rootReadonly = true;
    const caches = await prepareCaches(env.cacheRoot, spec.caches, WORKSPACE, uid, jobDir, diskMount);
    writableCaches = caches.writable;
    const skeletonPoints = caches.targets.filter((t) => !t.startsWith(WORKSPACE + "/") && !t.startsWith(HOME + "/") && t !== HOME);
    if (spec.image.kind === "host") {
      // the shared read-only skeleton, unless this job needs mount points of its own
      if (skeletonPoints.length === 0) rootfs = p.hostSkeletonDir;
      else await hostSkeleton(rootfs, skeletonPoints);
      mounts.push(...p.hostMounts);
    } else {
      const pull = { insecureRegistries: opts.insecureRegistries ?? [], signal, ...(opts.imagePullTimeoutMs !== undefined ? { timeoutMs: opts.imagePullTimeoutMs } : {}) };
      const img = await unpackImage(env.cacheDir, spec.image.ref, spec.image.digest, pull, opts.imageRoots ?? [join(env.cacheDir, "images")]);
      for (const d of ["upper", "work"]) await mkdir(join(diskMount, d), { mode: 0o755 });
      await chown(join(diskMount, "upper"), uid, uid);
      const lower = join(jobDir, "image");
      await mountImageForSlot(p.helper.path, img.rootfs, lower, uid, slot.uidCount);
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
      await mkdir(env.socketDir, { recursive: true, mode: 0o755 });
      await mkdir(sockDir, { mode: 0o750 });
      await chown(sockDir, 0, uid); // only this job's sandbox (its gid range) may reach the proxy
      proxy = await EgressProxy.start({
        socketPath: join(sockDir, "egress.sock"),
        jobId: spec.jobId,
        allow: spec.network.allow,
        auditLogPath: spec.auditLogPath,
        resolve: opts.resolveHost ?? defaultResolve,
        logger: opts.logger,
      });
      if (spec.network.transparent === true) {
        attachment = (await env.transparentEgress(slot)).attach({ allow: spec.network.allow, proxy });
        await writeFile(join(sockDir, "resolv.conf"), transparentResolvConf(slot.index), { mode: 0o644 });
        mounts.push(bindMount(join(sockDir, "resolv.conf"), "/etc/resolv.conf", true));
        mark("create: transparent egress attached");
      }
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
      uidCount: slot.uidCount,
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
        ...(p.seccomp.bpfBase64 !== null && opts.seccompMode !== "json" ? { "run.oci.seccomp_bpf_data": p.seccomp.bpfBase64 } : {}),
      },
      apparmorProfile: p.apparmor,
      ...(attachment !== null ? { netnsPath: `/run/netns/${transparentNames(slot.index).netns}` } : {}),
    });
    writeFileSync(join(jobDir, "bundle", "config.json"), JSON.stringify(config)); // ~25 KB: one call here beats three pool round trips
    mark("create: rootfs + bundle");
    signal?.throwIfAborted();
    await ledger.quiet(slot.index); // the slot's parent cgroup is not being removed under crun
    channel = await InitChannel.open((read) => p.crun.runDetachedWithChannel(["--no-new-keyring", "--bundle", join(jobDir, "bundle"), containerId], "starting the job container", read));
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
      { channel, clock: opts.clock, logger: opts.logger, nsLevel: p.nsLevel, timeoutGraceMs: opts.timeoutGraceMs ?? 2000, teardown },
    );
  } catch (e) {
    // a failed build leaves nothing: its caller gets the error only once everything is removed
    await stop(spec.jobId)
      .then(({ rest }) => rest)
      .catch((te: unknown) => {
        ledger.markDirty(slot.index);
        opts.logger.warn({ jobId: spec.jobId, err: String(te) }, "cleanup after a failed create failed");
      });
    if (e instanceof DeltaError) throw e;
    throw new DeltaError("E_SANDBOX", `cannot create the sandbox: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}
