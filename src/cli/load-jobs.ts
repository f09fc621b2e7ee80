/** Reads and validates a job file for a command, or ends it with exit 2 and every issue listed. */
import { existsSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { JobFileParser, formatIssue, type ParsedJob } from "../jobfile/parse.ts";
import { usageError } from "./exit.ts";

export const DEFAULT_JOB_FILES = [".deltaci.yml", ".deltaci.yaml", "deltaci.yml", "deltaci.yaml"];

/** The job file to use: the given one, else the first default name present in `cwd`. */
export function resolveJobFile(file: string | undefined, cwd: string): string {
  if (file !== undefined) {
    const p = resolve(cwd, file);
    if (!existsSync(p)) throw usageError(`deltaci: no such job file: ${file}`);
    return p;
  }
  const found = DEFAULT_JOB_FILES.map((f) => join(cwd, f)).find((p) => existsSync(p));
  if (!found) throw usageError(`deltaci: no job file given and none of ${DEFAULT_JOB_FILES.join(", ")} in ${cwd}`);
  return found;
}

export function loadJobs(path: string, cwd: string): ParsedJob[] {
  const shown = relative(cwd, path) || path;
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw usageError(`deltaci: cannot read ${shown}: ${(err as Error).message}`);
  }
  const result = new JobFileParser().parse(text, shown.startsWith("..") ? path : shown);
  if (!result.ok) {
    const n = result.issues.length;
    throw usageError(`${result.issues.map(formatIssue).join("\n")}\n${n} error${n === 1 ? "" : "s"} in ${shown}`);
  }
  return result.jobs;
}

/** The jobs named by `--job` (repeatable), in file order; every name must exist. */
export function selectJobs(jobs: ParsedJob[], names: string[]): ParsedJob[] {
  if (names.length === 0) return jobs;
  for (const n of names) {
    if (!jobs.some((j) => j.name === n)) throw usageError(`deltaci: no job "${n}" in the file (jobs: ${jobs.map((j) => j.name).join(", ")})`);
  }
  return jobs.filter((j) => names.includes(j.name));
}
