/** Shared vocabulary of the controller: pools, demand, runners as the scaling math sees them. */
import type { RequirementSet, Resources } from "../protocol/schemas.ts";

/** Isolation a pool's runners use (mirrors the sandbox's names; the controller never imports it). */
export type PoolIsolation = "oci" | "process";

/** A class of runners the controller may start: what they offer and how many at most. */
export interface Pool {
  name: string;
  os: string;
  arch: string;
  labels: string[];
  resources: Resources;
  /** Most runners of this pool alive at once (starting, idle, busy and draining all count). */
  max: number;
  /** Runners kept warm (started, waiting for a lease) beyond what queued jobs claim. */
  minIdle: number;
  isolation: PoolIsolation;
}

/** One entry of `GET /v1/controller/demand`. */
export interface DemandEntry {
  requirements: RequirementSet;
  queued: number;
  running: number;
  unschedulable?: number;
}

/**
 * A runner as the provider sees it. `starting`: launched, has not yet taken its registration
 * token; `idle`: waiting for a lease; `busy`: running a job; `draining`: asked to exit.
 */
export type RunnerState = "starting" | "idle" | "busy" | "draining";
export const RUNNER_STATES: readonly RunnerState[] = ["starting", "idle", "busy", "draining"];

export interface RunnerView {
  id: string;
  pool: string;
  state: RunnerState;
  /** When the runner entered `state` (ms since epoch), as first observed. */
  sinceMs: number;
}

export interface ScalingPolicy {
  /** Most runners alive at once across all pools. */
  maxRunners: number;
  /** An idle runner is drained only after it has been idle this long (damps flapping). */
  idleGraceMs: number;
}

export type Decision =
  | { kind: "launch"; pool: string; count: number; reason: "demand" | "min-idle" }
  | { kind: "drain"; pool: string; runnerId: string; reason: "surplus" };
