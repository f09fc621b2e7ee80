/**
 * Generates the bundle's precompiled ajv validators (ajv standalone code): the job file's schema,
 * and the server's route schemas (the protocol's schemas and the routes' params). scripts/build.mjs
 * puts the result in place of the empty map of src/base/precompiled-validators.ts in dist/.
 * A route schema left out here still works: it is compiled on its first request, as from the sources.
 */
import { Ajv, type Options } from "ajv";
import standalone from "ajv/dist/standalone/index.js";
import { validatorKey } from "../src/base/precompiled-validators.ts";
import { JobFileSchema } from "../src/jobfile/schema.ts";
import { jobFileAjvOptions } from "../src/jobfile/schema-errors.ts";
import {
  ArtifactCreateRequest, CapacityRequest, CompleteRequest, HeartbeatRequest, LeaseRequest, RegisterRequest, RegistrationsRequest,
  SourceUploadRequest, SubmitJobRequest,
} from "../src/protocol/schemas.ts";
import { IdParams } from "../src/server/http/common.ts";
import { routeAjvOptions } from "../src/server/http/lazy-validators.ts";
import { ArtifactParams } from "../src/server/http/routes-jobs.ts";
import { UploadParams } from "../src/server/http/routes-sources.ts";

/** The API's route schemas (src/server/http/routes-*.ts; the web view's few are left to run time). */
export const routeSchemas = [
  RegisterRequest, LeaseRequest, HeartbeatRequest, CompleteRequest, ArtifactCreateRequest, SubmitJobRequest, SourceUploadRequest,
  CapacityRequest, RegistrationsRequest, IdParams, ArtifactParams, UploadParams,
];

/** One function scope per option set (their generated names would clash), exporting `v0…` (CommonJS form: its `require`s of ajv's runtime are bundled). */
function chunk(options: Options, name: string, schemas: object[]): { code: string; entries: string[] } {
  const ajv = new Ajv({ ...options, code: { source: true } });
  const refs: Record<string, string> = {};
  const entries: string[] = [];
  const seen = new Set<string>();
  for (const schema of schemas) {
    const key = validatorKey(name, schema);
    if (seen.has(key)) continue;
    seen.add(key);
    const id = `v${seen.size - 1}`;
    ajv.addSchema(schema, key);
    refs[id] = key;
    entries.push(`[${JSON.stringify(key)}, ${name}Validators.${id}]`);
  }
  const code = `const ${name}Validators = (() => { const module = { exports: {} }; const exports = module.exports; ${standalone.default(ajv, refs)}\nreturn module.exports; })();`;
  return { code, entries };
}

/** TypeScript that declares `precompiledValidators` (a Map from validatorKey to validate function). */
export function precompiledValidatorsSource(): string {
  const parts = [chunk(jobFileAjvOptions, "jobfile", [JobFileSchema]), chunk(routeAjvOptions, "route", routeSchemas)];
  return `${parts.map((p) => p.code).join("\n")}\n// eslint-disable-next-line @typescript-eslint/no-explicit-any\nexport const precompiledValidators: ReadonlyMap<string, PrecompiledValidator> = new Map<string, any>([${parts.flatMap((p) => p.entries).join(", ")}]);\n`;
}
