/**
 * Validates parsed job-file data with ajv against the one schema and turns ajv's errors into
 * messages a person can act on: the field, what was expected, a suggestion for a misspelt key.
 * Unions are resolved by the value's JSON type: when exactly one branch takes that type,
 * its errors are reported (so a typo inside `network: {allwo: …}` is named), else "expected …".
 */
import { Ajv, type ErrorObject, type Options, type ValidateFunction } from "ajv";
import { precompiledValidators, validatorKey } from "../base/precompiled-validators.ts";
import { JobFileSchema } from "./schema.ts";
import { pointerToPath, type PathSegment } from "./locate.ts";
import { suggest } from "./suggest.ts";

export interface SchemaIssue {
  path: PathSegment[];
  /** For unknown keys: the key, so the position points at it rather than its map. */
  key: string | null;
  message: string;
  /** For unknown keys: the key it probably meant; a "missing required" for that key is then not repeated. */
  suggestion?: string;
}

/** The job file validator's ajv options (the build generates code with the same). */
export const jobFileAjvOptions: Options = { allErrors: true, verbose: true, strict: true, allowUnionTypes: true };

/**
 * The build's precompiled validator (src/base/precompiled-validators.ts), else compiled once per
 * CLI process and run on a file or two: ajv's code optimization pass costs more than it saves
 * then (it is most of the compile), so it is off.
 */
export function compileJobFileValidator(): ValidateFunction {
  const built = precompiledValidators.get(validatorKey("jobfile", JobFileSchema));
  if (built) return built as ValidateFunction;
  const ajv = new Ajv({ ...jobFileAjvOptions, code: { optimize: false } });
  return ajv.compile(JobFileSchema);
}

function jsonType(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

function describeValue(v: unknown): string {
  const t = jsonType(v);
  if (t === "string") return `"${String(v).length > 40 ? `${String(v).slice(0, 40)}…` : String(v)}"`;
  if (t === "integer" || t === "number" || t === "boolean") return `${String(v)} (a ${t === "integer" ? "number" : t})`;
  if (t === "array") return "a list";
  if (t === "object") return "a map";
  return "null (empty)";
}

function branchAccepts(branch: Record<string, unknown>, t: string): boolean {
  if (branch.const !== undefined) return jsonType(branch.const) === t;
  const type = branch.type;
  const types = Array.isArray(type) ? type : [type];
  return types.some((x) => x === t || (x === "number" && t === "integer"));
}

function expected(e: ErrorObject): string {
  const own = (e.parentSchema as { description?: string } | undefined)?.description;
  return own ? `expected ${own}` : e.message ?? "invalid";
}

/** Turns ajv errors into issues, dropping the noise of union branches that do not apply. */
export function explainSchemaErrors(errors: readonly ErrorObject[], data: unknown): SchemaIssue[] {
  const droppedPrefixes: string[] = [];
  const droppedErrors = new Set<ErrorObject>();
  for (const e of errors) {
    if (e.keyword !== "anyOf") continue;
    const branches = (e.schema as Record<string, unknown>[]) ?? [];
    const t = jsonType(e.data);
    const matching = branches.map((b, i) => (branchAccepts(b, t) ? i : -1)).filter((i) => i >= 0);
    const only = matching.length === 1 ? matching[0] : undefined;
    if (only !== undefined && (t === "object" || t === "array")) {
      droppedErrors.add(e);
      branches.forEach((_, i) => {
        if (i !== only) droppedPrefixes.push(`${e.schemaPath}/${i}/`);
      });
    } else {
      droppedPrefixes.push(`${e.schemaPath}/`);
    }
  }
  const issues: Array<SchemaIssue & { missing?: string }> = [];
  const seen = new Set<string>();
  for (const e of errors) {
    if (droppedErrors.has(e) || droppedPrefixes.some((p) => e.schemaPath.startsWith(p))) continue;
    const issue = explainOne(e, data);
    if (!issue) continue;
    const id = `${issue.path.join("\0")}\0${issue.key ?? ""}\0${issue.message}`;
    if (seen.has(id)) continue;
    seen.add(id);
    issues.push(issue);
  }
  const meant = new Set(issues.filter((i) => i.suggestion).map((i) => `${i.path.slice(0, -1).join("\0")}\0${i.suggestion}`));
  return issues.filter((i) => !(i.missing && meant.has(`${i.path.join("\0")}\0${i.missing}`))).map(({ missing: _m, ...i }) => i);
}

function explainOne(e: ErrorObject, data: unknown): (SchemaIssue & { missing?: string }) | null {
  const path = pointerToPath(e.instancePath, data);
  const params = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case "additionalProperties": {
      const key = String(params.additionalProperty);
      const allowed = Object.keys(((e.parentSchema as { properties?: object } | undefined)?.properties ?? {}));
      const hint = suggest(key, allowed);
      const tail = hint ? ` — did you mean "${hint}"?` : allowed.length ? ` (expected one of: ${allowed.join(", ")})` : "";
      return { path: [...path, key], key, message: `unknown key "${key}"${tail}`, ...(hint ? { suggestion: hint } : {}) };
    }
    case "required": {
      const key = String(params.missingProperty);
      return { path, key: null, message: `missing required key "${key}"`, missing: key };
    }
    case "propertyNames":
      return null; // reported by the nested pattern error, which names the property
    case "pattern":
    case "format":
      if (params.propertyName !== undefined || e.propertyName !== undefined) {
        const name = String(e.propertyName ?? params.propertyName);
        const desc = (e.parentSchema as { description?: string } | undefined)?.description ?? "a valid name";
        return { path: [...path, name], key: name, message: `invalid name "${name}": expected ${desc}` };
      }
      return { path, key: null, message: `invalid value ${describeValue(e.data)}: ${expected(e)}` };
    case "type":
    case "anyOf":
    case "const":
    case "enum":
      return { path, key: null, message: `${expected(e)}, got ${describeValue(e.data)}` };
    case "minItems":
      return { path, key: null, message: `expected at least ${String(params.limit)} item(s)` };
    case "maxItems":
      return { path, key: null, message: `expected at most ${String(params.limit)} items` };
    case "minProperties":
      return { path, key: null, message: `expected at least ${String(params.limit)} entr${params.limit === 1 ? "y" : "ies"}, got none` };
    case "uniqueItems":
      return { path, key: null, message: `duplicate entries (items ${String(params.j)} and ${String(params.i)} are equal)` };
    default:
      return { path, key: null, message: `${e.message ?? "invalid"}${(e.parentSchema as { description?: string } | undefined)?.description ? ` (expected ${(e.parentSchema as { description: string }).description})` : ""}` };
  }
}
