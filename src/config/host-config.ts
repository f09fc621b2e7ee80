/**
 * `deltaci runner-host` settings (flags, then defaults; a controller passes every flag it cares
 * about). Durations accept 500ms/10s/5m.
 */
import { resolve } from "node:path";
import { DeltaError } from "../base/errors.ts";
import { parseDurationMs } from "../base/units.ts";
import { defaults } from "./defaults.ts";
import { RUNNER_ENV } from "./runner-config.ts";

export interface HostFlags {
  socket: string;
  workRoot: string;
  slotBase: string;
  slots: string;
  isolation: string;
  hostId: string;
  maxSessions?: string;
  maxAge?: string;
  runnerIdleTimeout?: string;
  prewarm?: boolean;
  imageRoots?: string;
  insecureRegistries?: string;
  logLevel?: string;
}

export interface HostConfig {
  socket: string;
  workRoot: string;
  slotBase: number;
  slots: number;
  isolation: "oci" | "process";
  hostId: string;
  maxSessions: number;
  maxAgeMs: number;
  runnerIdleTimeoutMs: number;
  prewarm: boolean;
  imageRoots: string[] | null;
  insecureRegistries: string[];
  logLevel: string;
}

function int(text: string, flag: string, min: number): number {
  if (!/^\d{1,7}$/.test(text) || Number(text) < min) throw new DeltaError("E_INVALID", `${flag}: expected an integer ≥ ${min}, got ${JSON.stringify(text)}`);
  return Number(text);
}

const list = (text: string | undefined) => (text ?? "").split(",").map((s) => s.trim()).filter((s) => s.length > 0);

export function hostConfig(flags: HostFlags, env: NodeJS.ProcessEnv = process.env): HostConfig {
  if (flags.isolation !== "oci" && flags.isolation !== "process") throw new DeltaError("E_INVALID", `--isolation must be oci or process, got ${JSON.stringify(flags.isolation)}`);
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(flags.hostId)) throw new DeltaError("E_INVALID", `--host-id: letters, digits and ._- only, got ${JSON.stringify(flags.hostId)}`);
  const imageRoots = flags.imageRoots ?? env[RUNNER_ENV.imageRoots];
  return {
    socket: resolve(flags.socket),
    workRoot: resolve(flags.workRoot),
    slotBase: int(flags.slotBase, "--slot-base", 0),
    slots: int(flags.slots, "--slots", 1),
    isolation: flags.isolation,
    hostId: flags.hostId,
    maxSessions: int(flags.maxSessions ?? String(defaults.hostMaxSessions), "--max-sessions", 0),
    maxAgeMs: parseDurationMs(flags.maxAge ?? defaults.hostMaxAgeMs),
    runnerIdleTimeoutMs: parseDurationMs(flags.runnerIdleTimeout ?? defaults.runnerIdleTimeoutMs),
    prewarm: flags.prewarm !== false && !/^(0|false|no|off)$/i.test(env[RUNNER_ENV.prewarm]?.trim() ?? ""),
    imageRoots: imageRoots ? list(imageRoots).map((d) => resolve(d)) : null,
    insecureRegistries: list(flags.insecureRegistries ?? env[RUNNER_ENV.insecureRegistries]),
    logLevel: flags.logLevel ?? env[RUNNER_ENV.logLevel] ?? "info",
  };
}
