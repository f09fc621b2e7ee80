/** The OCI runtime config of a job container: namespaces, id mapping, mounts, limits, hardening. */

export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

export interface BundleInput {
  rootfs: string;
  rootReadonly: boolean;
  hostname: string;
  uidBase: number;
  uidCount: number;
  cgroupsPath: string;
  memoryMiB: number;
  pids: number;
  cpus: number;
  tmpMiB: number;
  /** Extra mounts after the standard ones (workspace, home, helper, steps, caches). */
  mounts: OciMount[];
  initArgs: string[];
  env: string[];
  /** OCI `linux.seccomp` object, or null for none. */
  seccomp: object | null;
  annotations: Record<string, string>;
  apparmorProfile: string | null;
  /** A network namespace to join (the slot's transparent egress path) instead of a new, empty one; `/sys` is then an empty tmpfs. */
  netnsPath?: string;
}

/** What root in the user namespace keeps: enough for package managers, nothing host-facing. */
export const CONTAINER_CAPS = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FOWNER",
  "CAP_FSETID",
  "CAP_KILL",
  "CAP_NET_BIND_SERVICE",
  "CAP_SETFCAP",
  "CAP_SETGID",
  "CAP_SETPCAP",
  "CAP_SETUID",
  "CAP_SYS_CHROOT",
];

export const MASKED_PATHS = [
  "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
  "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap", "/sys/kernel/debug",
];
export const READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

export function processCaps(): object {
  return { bounding: CONTAINER_CAPS, effective: CONTAINER_CAPS, permitted: CONTAINER_CAPS, inheritable: [], ambient: [] };
}

/** The `process` object of the container's init (every step inherits its confinement). */
export function ociProcess(args: string[], env: string[], cwd: string, apparmorProfile: string | null): object {
  return {
    terminal: false,
    user: { uid: 0, gid: 0, additionalGids: [] },
    args,
    env,
    cwd,
    capabilities: processCaps(),
    noNewPrivileges: true,
    ...(apparmorProfile === null ? {} : { apparmorProfile }),
  };
}

export function bundleConfig(b: BundleInput): object {
  const nsd = ["nosuid", "nodev", "noexec"];
  return {
    ociVersion: "1.0.2",
    process: ociProcess(b.initArgs, b.env, "/", b.apparmorProfile),
    root: { path: b.rootfs, readonly: b.rootReadonly },
    hostname: b.hostname,
    annotations: b.annotations,
    mounts: [
      { destination: "/proc", type: "proc", source: "proc", options: nsd },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
      { destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
      { destination: "/dev/shm", type: "tmpfs", source: "shm", options: [...nsd, "mode=1777", "size=65536k"] },
      { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: nsd },
      // sysfs mounts only for the owner of the netns: a joined one (the runner's) gets an empty /sys,
      // not crun's fallback, a bind of the host's
      b.netnsPath === undefined
        ? { destination: "/sys", type: "sysfs", source: "sysfs", options: [...nsd, "ro"] }
        : { destination: "/sys", type: "tmpfs", source: "tmpfs", options: [...nsd, "ro", "size=4k", "mode=755"] },
      { destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=1777", `size=${b.tmpMiB}m`] },
      { destination: "/run", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=755", "size=16m"] },
      ...b.mounts,
    ],
    linux: {
      uidMappings: [{ containerID: 0, hostID: b.uidBase, size: b.uidCount }],
      gidMappings: [{ containerID: 0, hostID: b.uidBase, size: b.uidCount }],
      namespaces: [{ type: "pid" }, b.netnsPath === undefined ? { type: "network" } : { type: "network", path: b.netnsPath }, { type: "ipc" }, { type: "uts" }, { type: "mount" }, { type: "cgroup" }, { type: "user" }],
      cgroupsPath: b.cgroupsPath,
      resources: {
        devices: [{ allow: false, access: "rwm" }],
        memory: { limit: b.memoryMiB * 1024 * 1024 },
        pids: { limit: b.pids },
        cpu: { period: 100_000, quota: Math.max(1000, Math.round(b.cpus * 100_000)) },
      },
      maskedPaths: MASKED_PATHS,
      readonlyPaths: READONLY_PATHS,
      ...(b.seccomp === null ? {} : { seccomp: b.seccomp }),
    },
  };
}

export function bindMount(source: string, destination: string, readonly: boolean): OciMount {
  return { destination, type: "bind", source, options: ["rbind", "nosuid", "nodev", readonly ? "ro" : "rw"] };
}
