/**
 * The runner controller's configuration: its defaults (with units), pool specs parsed from
 * `--pool NAME:labels=a,b:max=N:min-idle=N:isolation=oci:os=linux:arch=x64:cpus=2:memory=2Gi:disk=10Gi`,
 * and what the host offers when a pool does not say.
 */
import { cpus, totalmem } from "node:os";
import { statfsSync } from "node:fs";
import { DeltaError } from "../base/errors.ts";
import { parseSizeBytes } from "../base/units.ts";
import type { Pool, PoolIsolation } from "../controller/types.ts";
import type { Resources } from "../protocol/schemas.ts";

export const controllerDefaults = {
  maxRunners: 4,
  minIdle: 0,
  workRoot: "./.deltaci/runners",
  /** How long one `GET /v1/controller/demand` long poll is held by the server. */
  demandWaitMs: 25_000,
  /** Housekeeping period: runner state probes, backoff expiry, adopted runners' exits. */
  tickMs: 250,
  /** An idle runner is drained only after being idle this long. */
  idleGraceMs: 5_000,
  /** A runner that fails within this time of its start, before taking a job, crashed at start. */
  startupGraceMs: 15_000,
  crashBackoffBaseMs: 1_000,
  crashBackoffMaxMs: 60_000,
  /** A drained runner that has not exited after this long (and runs no job) is killed. */
  drainTimeoutMs: 10_000,
  /** Runners exit by themselves when no job comes for this long. */
  runnerIdleTimeoutMs: 5 * 60_000,
  registrationTtlMs: 10 * 60_000,
  /** Retry delay after the server could not be reached. */
  serverRetryBaseMs: 250,
  serverRetryMaxMs: 5_000,
  requestTimeoutMs: 15_000,
} as const;

const POOL_KEYS = ["labels", "max", "min-idle", "isolation", "os", "arch", "cpus", "memory", "disk"] as const;
const LABEL = /^[A-Za-z0-9._:/=-]{1,64}$/;

/** What runners on this host offer by default (the runner reports the same facts when it registers). */
export function hostPoolDefaults(workRoot: string): { os: string; arch: string; resources: Resources } {
  let diskMiB = 0;
  try {
    const s = statfsSync(workRoot);
    diskMiB = Math.floor((s.bavail * s.bsize) / 1024 ** 2);
  } catch {
    try {
      const s = statfsSync(".");
      diskMiB = Math.floor((s.bavail * s.bsize) / 1024 ** 2);
    } catch {}
  }
  return { os: process.platform, arch: process.arch, resources: { cpus: cpus().length, memoryMiB: Math.floor(totalmem() / 1024 ** 2), diskMiB } };
}

export interface PoolDefaults {
  os: string;
  arch: string;
  resources: Resources;
  max: number;
  minIdle: number;
  isolation: PoolIsolation;
  labels: string[];
}

function positiveInt(text: string, what: string, min = 0): number {
  if (!/^\d+$/.test(text) || Number(text) < min) throw new DeltaError("E_INVALID", `${what}: expected an integer ≥ ${min}, got "${text}"`);
  return Number(text);
}

export function parseLabels(text: string): string[] {
  const labels = text.split(",").map((l) => l.trim()).filter((l) => l.length > 0);
  for (const l of labels) if (!LABEL.test(l)) throw new DeltaError("E_INVALID", `invalid label "${l}" (letters, digits and ._:/=- , at most 64)`);
  return [...new Set(labels)];
}

export function parseIsolation(text: string): PoolIsolation {
  if (text !== "oci" && text !== "process") throw new DeltaError("E_INVALID", `invalid isolation "${text}" (oci or process)`);
  return text;
}

/** Parses one `--pool` value; keys it does not name come from `defaults`. */
export function parsePoolSpec(spec: string, defaults: PoolDefaults): Pool {
  const [name = "", ...rest] = spec.split(new RegExp(`:(?=(?:${POOL_KEYS.join("|")})=)`));
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) throw new DeltaError("E_INVALID", `--pool "${spec}": the name must come first (letters, digits, _ and -)`);
  const pool: Pool = { name, os: defaults.os, arch: defaults.arch, labels: [...defaults.labels], resources: { ...defaults.resources }, max: defaults.max, minIdle: defaults.minIdle, isolation: defaults.isolation };
  for (const part of rest) {
    const eq = part.indexOf("=");
    const key = part.slice(0, eq);
    const value = part.slice(eq + 1);
    const what = `--pool ${name}: ${key}`;
    switch (key as (typeof POOL_KEYS)[number]) {
      case "labels": pool.labels = parseLabels(value); break;
      case "max": pool.max = positiveInt(value, what, 1); break;
      case "min-idle": pool.minIdle = positiveInt(value, what); break;
      case "isolation": pool.isolation = parseIsolation(value); break;
      case "os": pool.os = value; break;
      case "arch": pool.arch = value; break;
      case "cpus": {
        const c = Number(value);
        if (!(c > 0)) throw new DeltaError("E_INVALID", `${what}: expected a positive number, got "${value}"`);
        pool.resources.cpus = c;
        break;
      }
      case "memory": pool.resources.memoryMiB = Math.floor(parseSizeBytes(value) / 1024 ** 2); break;
      case "disk": pool.resources.diskMiB = Math.floor(parseSizeBytes(value) / 1024 ** 2); break;
      default: throw new DeltaError("E_INVALID", `--pool "${spec}": unknown key "${key}" (known: ${POOL_KEYS.join(", ")})`);
    }
  }
  if (pool.minIdle > pool.max) throw new DeltaError("E_INVALID", `--pool ${name}: min-idle ${pool.minIdle} exceeds max ${pool.max}`);
  return pool;
}

/** Pools from `--pool` flags, or one pool named `default` from the global flags. Names are unique. */
export function resolvePools(specs: readonly string[], defaults: PoolDefaults): Pool[] {
  const pools = specs.length > 0 ? specs.map((s) => parsePoolSpec(s, defaults)) : [parsePoolSpec("default", defaults)];
  const seen = new Set<string>();
  for (const p of pools) {
    if (seen.has(p.name)) throw new DeltaError("E_INVALID", `--pool ${p.name} is given twice`);
    seen.add(p.name);
  }
  return pools;
}
