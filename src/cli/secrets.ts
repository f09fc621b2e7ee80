/** `--secret NAME=VALUE` / `--secret NAME` (value from the environment) → the values each job may get. */
import { secretFromEnv } from "../config/client-config.ts";
import type { ParsedJob } from "../jobfile/parse.ts";
import { usageError } from "./exit.ts";

const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

/** Parses the flags; values are never printed, not even in errors. */
export function parseSecretFlags(flags: string[], env: NodeJS.ProcessEnv = process.env): Map<string, string> {
  const out = new Map<string, string>();
  for (const flag of flags) {
    const eq = flag.indexOf("=");
    const name = eq < 0 ? flag : flag.slice(0, eq);
    if (!NAME.test(name)) throw usageError(`deltaci: --secret: invalid secret name "${name.slice(0, 64)}" (expected NAME or NAME=VALUE)`);
    const value = eq < 0 ? secretFromEnv(name, env) : flag.slice(eq + 1);
    if (value === undefined) throw usageError(`deltaci: --secret ${name}: no value given and ${name} is not set in the environment`);
    out.set(name, value);
  }
  return out;
}

/**
 * The secrets of one job: exactly the names it declares. A fork job gets none (and needs none);
 * a trusted job whose declared secret was not supplied is a usage error.
 */
export function secretsForJob(job: ParsedJob, supplied: Map<string, string>, fork: boolean): Record<string, string> {
  if (fork) return {};
  const missing = job.secrets.filter((n) => !supplied.has(n));
  if (missing.length > 0) {
    throw usageError(`deltaci: job "${job.name}" needs secret${missing.length > 1 ? "s" : ""} ${missing.join(", ")}: pass --secret NAME=VALUE, or --secret NAME to read it from the environment`);
  }
  return Object.fromEntries(job.secrets.map((n) => [n, supplied.get(n) ?? ""]));
}
