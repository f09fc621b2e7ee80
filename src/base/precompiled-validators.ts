/**
 * Ajv validators generated at build time (ajv standalone code), so that a bundled process
 * compiles no schema at start: compiling the job file's schema and the server's route schemas
 * was ~0.4–0.6 s of every `deltaci run`. The schemas stay the one source of truth: in the
 * sources this module holds no validators (they are compiled at run time, as before);
 * scripts/build.mjs replaces its body in dist/ with the generated ones (scripts/precompile-validators.ts).
 * A validator is found by its ajv options' name and a hash of the schema's JSON, so a schema
 * that differs from the one generated (a stale bundle cannot run: bin/deltaci.js) is compiled
 * as before rather than checked by the wrong code.
 */
import { createHash } from "node:crypto";

/** An ajv validate function, standalone or compiled. */
export interface PrecompiledValidator {
  (data: unknown, ctx?: unknown): boolean;
  errors?: unknown[] | null;
}

/** The generated validators by `validatorKey` (none in the sources). */
export const precompiledValidators: ReadonlyMap<string, PrecompiledValidator> = new Map();

/** `options`: the name of an ajv option set (one set per kind of schema: "route", "jobfile"). */
export function validatorKey(options: string, schema: unknown): string {
  return `${options}:${createHash("sha256").update(JSON.stringify(schema)).digest("hex")}`;
}
