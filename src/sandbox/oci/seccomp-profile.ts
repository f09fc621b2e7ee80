/**
 * Seccomp for job containers. containers-common's profile is not plain OCI: its rules carry
 * `includes`/`excludes` conditions (capabilities, arches, kernel version) that crun ignores, so
 * e.g. `bpf` or `fanotify_init` would be allowed. `toOciSeccomp` evaluates them for the job's real
 * capability set and architecture; `hardenSeccomp` then adds the project's stricter layer (no new
 * namespaces, mounts or keyrings from inside a job).
 */
import { release } from "node:os";

export interface OciSyscallArg {
  index: number;
  value: number;
  valueTwo?: number;
  op: string;
}

export interface OciSyscallRule {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: OciSyscallArg[];
}

export interface OciSeccomp {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures: string[];
  syscalls: OciSyscallRule[];
}

interface Conditions {
  caps?: string[];
  arches?: string[];
  minKernel?: string;
}

interface ContainersRule extends OciSyscallRule {
  includes?: Conditions | null;
  excludes?: Conditions | null;
}

interface ContainersProfile {
  defaultAction: string;
  defaultErrnoRet?: number;
  archMap?: Array<{ architecture: string; subArchitectures?: string[] | null }> | null;
  architectures?: string[];
  syscalls: ContainersRule[];
}

/** Node's arch → the Go arch names the profile's conditions use, and the libseccomp native arch. */
export const ARCHES: Record<string, { go: string; scmp: string }> = {
  x64: { go: "amd64", scmp: "SCMP_ARCH_X86_64" },
  arm64: { go: "arm64", scmp: "SCMP_ARCH_AARCH64" },
  ia32: { go: "x86", scmp: "SCMP_ARCH_X86" },
  arm: { go: "arm", scmp: "SCMP_ARCH_ARM" },
  s390x: { go: "s390x", scmp: "SCMP_ARCH_S390X" },
  ppc64: { go: "ppc64le", scmp: "SCMP_ARCH_PPC64LE" },
};

function kernelAtLeast(min: string, kernel: string): boolean {
  const a = kernel.split(/[.-]/).map(Number);
  const b = min.split(".").map(Number);
  for (let i = 0; i < b.length; i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (Number.isNaN(x) || x !== y) return (Number.isNaN(x) ? 0 : x) > y;
  }
  return true;
}

function applies(rule: ContainersRule, caps: Set<string>, goArch: string, kernel: string): boolean {
  const inc = rule.includes ?? {};
  const exc = rule.excludes ?? {};
  if (inc.caps?.length && !inc.caps.every((c) => caps.has(c))) return false;
  if (inc.arches?.length && !inc.arches.includes(goArch)) return false;
  if (inc.minKernel && !kernelAtLeast(inc.minKernel, kernel)) return false;
  if (exc.caps?.length && exc.caps.some((c) => caps.has(c))) return false;
  if (exc.arches?.length && exc.arches.includes(goArch)) return false;
  if (exc.minKernel && kernelAtLeast(exc.minKernel, kernel)) return false;
  return true;
}

/** Evaluates a containers-common profile into plain OCI form for `caps` on `nodeArch`. */
export function toOciSeccomp(profile: ContainersProfile, caps: string[], nodeArch = process.arch, kernel = release()): OciSeccomp {
  const arch = ARCHES[nodeArch];
  if (!arch) throw new Error(`no seccomp arch mapping for ${nodeArch}`);
  const capSet = new Set(caps);
  const entry = profile.archMap?.find((a) => a.architecture === arch.scmp);
  const architectures = entry ? [entry.architecture, ...(entry.subArchitectures ?? [])] : [arch.scmp];
  const syscalls: OciSyscallRule[] = [];
  for (const rule of profile.syscalls) {
    if (!applies(rule, capSet, arch.go, kernel)) continue;
    const out: OciSyscallRule = { names: [...rule.names], action: rule.action };
    if (rule.errnoRet !== undefined) out.errnoRet = rule.errnoRet;
    if (rule.args?.length) out.args = rule.args.map((a) => ({ index: a.index, value: a.value, valueTwo: a.valueTwo ?? 0, op: a.op }));
    syscalls.push(out);
  }
  return { defaultAction: profile.defaultAction, ...(profile.defaultErrnoRet === undefined ? {} : { defaultErrnoRet: profile.defaultErrnoRet }), architectures, syscalls };
}

/** Syscalls a job never needs: namespaces, mounts, keyrings, kernel log. */
export const DENIED_SYSCALLS = [
  "unshare", "setns", "mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick",
  "move_mount", "open_tree", "mount_setattr", "keyctl", "add_key", "request_key", "syslog", "acct", "quotactl", "quotactl_fd",
];
const CLONE_NEW_FLAGS = 0x7e020000; // CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET

/** The project's stricter layer on top of a converted profile. */
export function hardenSeccomp(p: OciSeccomp): OciSeccomp {
  const stripped = new Set([...DENIED_SYSCALLS, "clone", "clone3"]);
  const syscalls = p.syscalls.map((r) => ({ ...r, names: r.names.filter((n) => !stripped.has(n)) })).filter((r) => r.names.length > 0);
  syscalls.push(
    { names: DENIED_SYSCALLS, action: "SCMP_ACT_ERRNO", errnoRet: 1 },
    // clone without namespace flags only; clone3 hides its flags in memory: ENOSYS makes libc fall back to clone.
    { names: ["clone"], action: "SCMP_ACT_ALLOW", args: [{ index: 0, value: CLONE_NEW_FLAGS, valueTwo: 0, op: "SCMP_CMP_MASKED_EQ" }] },
    { names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: 38 },
  );
  return { ...p, syscalls };
}

const ACTIONS: Record<string, string> = {
  SCMP_ACT_ALLOW: "allow", SCMP_ACT_ERRNO: "errno", SCMP_ACT_KILL: "kill_thread", SCMP_ACT_KILL_THREAD: "kill_thread",
  SCMP_ACT_KILL_PROCESS: "kill_process", SCMP_ACT_TRAP: "trap", SCMP_ACT_LOG: "log",
};
const SCMP_ARCH_TOKENS: Record<string, string> = {
  SCMP_ARCH_X86_64: "x86_64", SCMP_ARCH_X86: "x86", SCMP_ARCH_X32: "x32", SCMP_ARCH_AARCH64: "aarch64", SCMP_ARCH_ARM: "arm",
  SCMP_ARCH_S390X: "s390x", SCMP_ARCH_S390: "s390", SCMP_ARCH_PPC64LE: "ppc64le",
};

/** The rule list for native/seccomp-export.c. */
export function exporterInput(p: OciSeccomp): string {
  const act = (a: string) => {
    const v = ACTIONS[a];
    if (!v) throw new Error(`unsupported seccomp action ${a}`);
    return v;
  };
  const lines = [`default ${act(p.defaultAction)} ${p.defaultErrnoRet ?? 1}`];
  for (const a of p.architectures) {
    const t = SCMP_ARCH_TOKENS[a];
    if (t) lines.push(`arch ${t}`);
  }
  for (const r of p.syscalls) {
    const args = (r.args ?? []).map((a) => `${a.index} ${a.op.replace(/^SCMP_CMP_/, "").toLowerCase()} ${a.value} ${a.valueTwo ?? 0}`);
    for (const name of r.names) lines.push(`rule ${act(r.action)} ${r.errnoRet ?? 1} ${name} ${args.length}${args.length ? " " + args.join(" ") : ""}`);
  }
  return lines.join("\n") + "\n";
}
