/**
 * The sandbox seam: what the runner needs from an isolation backend.
 *
 * Lifecycle: a long-lived `SandboxFactory` (one per runner process or runner host, or per test)
 * creates one `Sandbox` per job with `create()`. The runner then calls `start()` for each step in
 * order — never two steps at once — and waits for `StepProcess.done`. It calls `dispose()` exactly
 * once at the end, whatever happened (also after a failed `create`: `create` cleans up what it
 * made before throwing). `prewarm()` may build a job's sandbox before the job is known.
 *
 * What is guaranteed when:
 * - `dispose()` (idempotent) resolves once no process of the job is left and the job's data is
 *   unreachable: the workspace has left `workspaceOnHost`, no later sandbox of the slot can see any
 *   of it, and writable caches are saved. The rest of the teardown (container state, cgroups,
 *   mounts, loop device, files) may still run in the background.
 * - `settle(slot)` resolves once the slot's background teardowns have ended; `reapSlot(slot)` and
 *   `close()` wait for them too. After any of the three nothing of a disposed sandbox is left on
 *   the host: no container, mount, loop device, cgroup, network namespace or file.
 * - `isSlotClean(slot)` tells the owner of a slot whether it may skip `reapSlot` before the slot's
 *   next job (and so keep the slot's warm sandbox): see its comment.
 * - A backend may keep per-slot plumbing that no job's data reaches across jobs (oci: the slot's
 *   transparent egress path, its netns, veth, nft table and listener); `reapSlot` and `close()`
 *   remove it, and a job's `dispose()` detaches the job from it.
 */
import type { Cache, Image, Limits, Network } from "../protocol/schemas.ts";

export type Isolation = "oci" | "process";

export interface SandboxSpec {
  jobId: string;
  /** A runner slot owns a host uid/gid range and a work dir; slots never share either. */
  slot: SlotInfo;
  image: Image;
  limits: Limits;
  network: Network;
  /** A tar archive (host path) extracted safely into the workspace before the first step, or none. */
  sourceArchive: string | null;
  caches: Cache[];
  /** Where connection decisions are appended (JSON lines: time, job, destination, port, decision). */
  auditLogPath: string | null;
  /** Values of the job's secrets: a writable cache containing one (raw or base64) is not saved after the job. */
  secretValues?: string[];
}

/** What a prewarmed sandbox is built from: a job's spec without the job (see warm-pool.ts). */
export type WarmSpec = Omit<SandboxSpec, "jobId" | "sourceArchive" | "auditLogPath" | "secretValues">;

export interface SlotInfo {
  index: number;
  /** First host uid/gid of the slot's range; root in the sandbox maps here. */
  hostUidBase: number;
  /** Size of the range (65536 by default). */
  uidCount: number;
  /** Host directory owned by this slot: workspaces, overlays, bundles live below it. */
  workDir: string;
}

export interface StepSpec {
  /** The script, run as `shell` with the script file as its argument (default `bash -e`, else `sh -e`). */
  run: string;
  shell: string | null;
  env: Record<string, string>;
  /** Relative to the workspace; must stay inside it. */
  workingDirectory: string | null;
  timeoutMs: number;
}

/** A limit hit, reported as the job's failure reason. */
export type LimitReason = "timeout" | "memory_limit" | "pids_limit" | "disk_quota";

export interface StepResult {
  exitCode: number | null;
  signal: string | null;
  durationMs: number;
  /** Set when the step ended because a limit was hit; `message` names the limit and its value. */
  limit: { reason: LimitReason; message: string } | null;
  /** True when the step was stopped by `stop()` (cancel). */
  stopped: boolean;
}

/**
 * Where a step's output goes as it is read. Each chunk is a view of one read buffer that the
 * sandbox reuses for the next read: consume it (or copy what must outlive it) before returning.
 * Called synchronously, in order, never after `done` resolves.
 */
export interface StepOutput {
  stdout(chunk: Buffer): void;
  stderr(chunk: Buffer): void;
}

/** Bytes of the buffer a step's output is read into (one read at a time). */
export const STEP_READ_BUFFER_BYTES = 64 * 1024;

export interface StepProcess {
  /** Resolves once the step's whole process tree is gone and all its output was handed to its `StepOutput`. */
  readonly done: Promise<StepResult>;
  /** SIGTERM to the step's process tree, then SIGKILL after `graceMs` (0: SIGKILL at once). */
  stop(graceMs: number): void;
}

export interface Sandbox {
  readonly isolation: Isolation;
  /** Path of the workspace inside the sandbox (e.g. /workspace) — what `DELTACI_WORKSPACE` is. */
  readonly workspaceInSandbox: string;
  /** Host path of the workspace, for collecting artifacts after steps ran. */
  readonly workspaceOnHost: string;
  start(step: StepSpec, output: StepOutput): StepProcess;
  dispose(): Promise<void>;
}

export interface SandboxFactory {
  readonly isolation: Isolation;
  /** Throws DeltaError with code `E_SANDBOX` (→ failure `sandbox_error`) or `E_SOURCE` (→ `source_error`). */
  create(spec: SandboxSpec, signal?: AbortSignal): Promise<Sandbox>;
  /**
   * Removes whatever is in this slot (containers, mounts, cgroups, netns, loop devices, dirs: a
   * crashed runner's leftovers, this factory's warm sandbox for the slot), after waiting for the
   * slot's background teardowns. Afterwards the slot is clean (`isSlotClean`) for this factory.
   */
  reapSlot(slot: SlotInfo): Promise<string[]>;
  /**
   * True when this factory vouches for the slot, so that its owner may skip `reapSlot` before the
   * slot's next job and keep its warm sandbox: this factory reaped the slot itself, has made
   * everything the slot has held since, and every teardown there has succeeded or is still running
   * (a `create` or `prewarm` does not need to wait for one). False for a slot this factory never
   * reaped (e.g. in a new process, after a crash) and after a failed teardown: reap it then.
   * Synchronous, no I/O.
   */
  isSlotClean(slot: SlotInfo): boolean;
  /** Resolves once every teardown started in the slot (dispose's background part) has ended. Never rejects. */
  settle(slot: SlotInfo): Promise<void>;
  /**
   * Starts building a sandbox for jobs shaped like `spec` (same slot, image and limits), so that
   * the next matching `create` returns at once. Resolves once it is built (or its build failed,
   * which is logged and leaves the job to build its own); never rejects. A backend that cannot
   * prebuild, or a spec that needs the job (caches, an egress allowlist), makes it a no-op.
   * Calling it right after the slot's previous sandbox was disposed of is cheap and safe: it
   * does not wait for that teardown, and the new sandbox shares nothing with the old one.
   */
  prewarm(spec: WarmSpec): Promise<void>;
  /** Disposes of prewarmed sandboxes no job took and waits for every background teardown; call before the process exits. */
  close(): Promise<void>;
}

/** What a sandbox backend logs through (pino-compatible: fields first, then the message). */
export interface SandboxLogger {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
}
