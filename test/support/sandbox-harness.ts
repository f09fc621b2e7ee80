/** Test harnesses for the sandbox backends: fresh slots in temp dirs, leftovers, archives, cleanup. */
import { execFileSync } from "node:child_process";
import { randomInt } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { systemClock } from "../../src/base/clock.ts";
import type { ConformanceHarness } from "../../src/sandbox/conformance.ts";
import { CrunSandboxFactory } from "../../src/sandbox/oci/crun-sandbox-factory.ts";
import { ProcessSandboxFactory } from "../../src/sandbox/process/process-sandbox.ts";
import { slotInfo } from "../../src/sandbox/slots.ts";
import type { SandboxLogger, SandboxSpec, SlotInfo } from "../../src/sandbox/types.ts";

export interface CapturingLogger extends SandboxLogger {
  warnings: string[];
}

export function capturingLogger(): CapturingLogger {
  const warnings: string[] = [];
  return { warnings, info: () => {}, warn: (_f, msg) => warnings.push(msg) };
}

/** A temp root the sandbox's unprivileged uids can traverse (mkdtemp makes 0700). */
export function tempRoot(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `deltaci-${prefix}-`));
  chmodSync(dir, 0o755);
  return dir;
}

export function makeArchiveIn(root: string, files: Record<string, string>): string {
  const dir = mkdtempSync(join(root, "src-"));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  const archive = `${dir}.tar`;
  execFileSync("tar", ["-cf", archive, "-C", dir, "."]);
  return archive;
}

export function baseSpec(slot: SlotInfo, over: Partial<SandboxSpec> = {}): SandboxSpec {
  return {
    jobId: `job_${Date.now().toString(36)}${randomInt(1e9)}`,
    slot,
    image: { kind: "host" },
    limits: { timeoutMs: 600_000, cpus: 1, memoryMiB: 512, diskMiB: 512, pids: 512, logMiB: 64 },
    network: { egress: "none" },
    sourceArchive: null,
    caches: [],
    auditLogPath: null,
    ...over,
  };
}

/** A random slot index, so parallel test runs never share uid ranges, cgroups or names. */
export function randomSlot(root: string): SlotInfo {
  return slotInfo(randomInt(1000, 30_000), join(root, "slots"));
}

export interface OciTestEnv extends ConformanceHarness {
  factory: CrunSandboxFactory;
  root: string;
  slots: SlotInfo[];
  /** Reaps every slot used and removes the temp root; returns what had to be reaped. */
  cleanup(): Promise<string[]>;
}

export function ociTestEnv(logger: SandboxLogger = capturingLogger(), opts: { oneSlot?: boolean; spareDisks?: boolean; crunPath?: string; libcrun?: boolean } = {}): OciTestEnv {
  const root = tempRoot("oci");
  // local images: the shared cache (the Debian test image) and this env's own temp dir
  const factory = new CrunSandboxFactory({
    clock: systemClock, logger, cacheDir: "/var/cache/deltaci", cacheRoot: join(root, "caches"), imageRoots: ["/var/cache/deltaci/images", root],
    ...(opts.spareDisks ? { spareDisks: true } : {}),
    ...(opts.crunPath !== undefined ? { crunPath: opts.crunPath } : {}),
    ...(opts.libcrun !== undefined ? { libcrun: opts.libcrun } : {}),
  });
  const slots: SlotInfo[] = [];
  return {
    factory,
    root,
    slots,
    spec: (over = {}) => {
      const slot = opts.oneSlot && slots[0] ? slots[0] : randomSlot(root);
      if (!slots.includes(slot)) slots.push(slot);
      return baseSpec(slot, over);
    },
    leftovers: (spec) => factory.inspectSlot(spec.slot),
    makeArchive: async (files) => makeArchiveIn(root, files),
    cleanup: async () => {
      const reaped: string[] = [];
      for (const slot of slots) {
        reaped.push(...(await factory.reapSlot(slot)));
        await factory.pruneImages(slot);
      }
      rmSync(root, { recursive: true, force: true });
      return reaped;
    },
  };
}

export function processTestEnv(logger: SandboxLogger = capturingLogger()): ConformanceHarness & { cleanup(): void } {
  const root = tempRoot("proc");
  const factory = new ProcessSandboxFactory({ clock: systemClock, logger });
  return {
    factory,
    spec: (over = {}) => baseSpec(randomSlot(root), over),
    leftovers: async (spec) => (existsSync(spec.slot.workDir) ? readdirSync(spec.slot.workDir) : []),
    makeArchive: async (files) => makeArchiveIn(root, files),
    cleanup: () => rmSync(root, { recursive: true, force: true }),
  };
}
