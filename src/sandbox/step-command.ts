/** Pieces every backend shares: the shell command line of a step and its working directory. */
import { posix } from "node:path";
import { DeltaError } from "../base/errors.ts";
import type { StepSpec } from "./types.ts";

/**
 * The argv that runs a step's script file: `shell` split on blanks, `{0}` replaced by the script
 * path (or the path appended). Without a shell: `bash -e` when bash exists, else `sh -e`.
 */
export function shellArgv(step: StepSpec, scriptPath: string, hasBash: boolean): string[] {
  const words = (step.shell ?? (hasBash ? "bash -e" : "sh -e")).trim().split(/\s+/).filter((w) => w.length > 0);
  if (words.length === 0) throw new DeltaError("E_INVALID", "step shell is empty");
  const withPath = words.map((w) => (w === "{0}" ? scriptPath : w));
  return words.includes("{0}") ? withPath : [...withPath, scriptPath];
}

/** Resolves a step's working directory against the workspace; it must stay inside it. */
export function stepCwd(workspace: string, workingDirectory: string | null): string {
  if (workingDirectory === null || workingDirectory === "" || workingDirectory === ".") return workspace;
  const resolved = posix.resolve(workspace, workingDirectory);
  if (resolved !== workspace && !resolved.startsWith(workspace + "/")) {
    throw new DeltaError("E_INVALID", `workingDirectory "${workingDirectory}" leaves the workspace`);
  }
  return resolved;
}

/** The environment every step starts from, before the step's own variables. */
export function baseStepEnv(workspace: string, home: string, path: string): Record<string, string> {
  return { PATH: path, HOME: home, DELTACI_WORKSPACE: workspace, LANG: "C.UTF-8", CI: "true" };
}

export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** A step's environment as a process gets it: a NUL byte in a value cannot be passed, so it is refused. */
export function assertPassableEnv(env: Record<string, string>): void {
  for (const [k, v] of Object.entries(env)) {
    if (v.includes("\0")) throw new DeltaError("E_INVALID", `step environment variable ${k} contains a NUL byte`);
  }
}
