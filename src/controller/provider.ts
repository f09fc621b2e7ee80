/**
 * The seam between the reconcile loop and whatever runs runners (local processes today,
 * Kubernetes pods later).
 *
 * Lifecycle: `init()` once, before anything else: it adopts runners that a previous controller
 * left running and reaps what dead ones left behind. Then, from one caller at a time (the
 * reconcile loop serialises its calls): `launch()` starts a runner with a registration token;
 * `refresh()` updates every runner's state, and `list()` returns the last snapshot;
 * `drain()` asks a runner to exit once it has no job (its job, if any, finishes);
 * `terminate()` kills a runner at once and reaps its leftovers. Exits are reported through
 * `onExit` listeners after the runner's leftovers were reaped. `close()` stops watching but
 * leaves runners running: a new controller adopts them.
 */
import type { Pool, RunnerState } from "./types.ts";

export interface RunnerRecord {
  id: string;
  pool: string;
  state: RunnerState;
  /** When the runner entered `state`, as first observed (ms since epoch). */
  sinceMs: number;
  launchedAtMs: number;
  /** True for runners started by an earlier controller and adopted by this one. */
  adopted: boolean;
  /** True once the runner was seen running a job. */
  everBusy: boolean;
  /** Provider-specific handle: a pid, a pod name. */
  handle: string;
}

export interface RunnerExit {
  runner: RunnerRecord;
  /** Exit code when known (not for adopted processes), else null. */
  code: number | null;
  signal: string | null;
  lifetimeMs: number;
  /** The runner was drained or terminated by the controller. */
  requested: boolean;
  /** Last lines of the runner's own log, to explain a crash. */
  logTail: string;
  /** What the reaper removed after it (containers, mounts, dirs, ...). */
  reaped: string[];
}

export interface LaunchRequest {
  pool: Pool;
  registrationToken: string;
  /** The control plane's URL the runner connects to. */
  serverUrl: string;
}

export interface InitResult {
  adopted: RunnerRecord[];
  /** Leftovers of dead runners removed at start. */
  reaped: string[];
}

export interface RunnerProvider {
  init(): Promise<InitResult>;
  launch(req: LaunchRequest): Promise<RunnerRecord>;
  refresh(): Promise<void>;
  list(): RunnerRecord[];
  drain(id: string): Promise<void>;
  terminate(id: string): Promise<void>;
  onExit(listener: (exit: RunnerExit) => void): void;
  /**
   * Reaps every slot this provider used that no runner holds now (a clean exit leaves the
   * slot's empty per-slot objects, e.g. its parent cgroup, for the next runner of the slot).
   * Called when the controller stops with its runners; optional for providers without slots.
   */
  reapFreeSlots?(): Promise<string[]>;
  close(): Promise<void>;
}

/** A runner slot on this host, as the reaper needs it. */
export interface SlotRef {
  index: number;
  /** The controller's own directory for the slot (state, token file, runner log). */
  dir: string;
  /** The runner's `--work-dir`. */
  workDir: string;
}

/**
 * Removes whatever a dead runner left in its slot (containers, mounts, cgroups, loop devices,
 * network namespaces, workspaces). Supplied by the composition root, which may use the sandbox.
 * Returns a description of each thing removed.
 */
export interface SlotReaper {
  reap(slot: SlotRef): Promise<string[]>;
}
