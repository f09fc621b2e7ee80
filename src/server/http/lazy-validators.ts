/**
 * Route validators: the build's precompiled ones (src/base/precompiled-validators.ts), else
 * compiled on a route's first request, not at start-up: compiling every route's schemas (ajv
 * code generation) was most of the server's start time, and most routes of a short-lived
 * embedded server (`deltaci run`) are never called. Same Ajv options as Fastify's default
 * compiler with the server's overrides (no coercion, no defaults, no removal, first error
 * only); the protocol schemas use no formats and no external $refs.
 */
import { Ajv, type Options } from "ajv";
import type { FastifySchemaCompiler, ValidationResult } from "fastify";
import { precompiledValidators, validatorKey, type PrecompiledValidator } from "../../base/precompiled-validators.ts";

interface LazyValidator {
  (data: unknown, ctx?: unknown): boolean;
  errors?: ValidationResult[] | null;
  /** Fastify passes the parent (request) to a validator that has this, as it does to Ajv's. */
  schemaEnv: true;
}

/** The route validators' ajv options (the build generates code with the same). */
export const routeAjvOptions: Options = { coerceTypes: false, useDefaults: false, removeAdditional: false, addUsedSchema: false, allErrors: false };

export function lazyValidatorCompiler(): FastifySchemaCompiler<unknown> {
  let ajv: Ajv | null = null;
  return ({ schema }) => {
    let compiled: PrecompiledValidator | null = null;
    const validate = ((data: unknown, ctx?: unknown) => {
      compiled ??= precompiledValidators.get(validatorKey("route", schema)) ?? null;
      if (!compiled) {
        ajv ??= new Ajv(routeAjvOptions);
        compiled = ajv.compile(schema as object) as PrecompiledValidator;
      }
      const ok = ctx === undefined ? compiled(data) : compiled(data, ctx);
      validate.errors = compiled.errors as ValidationResult[] | null;
      return ok;
    }) as LazyValidator;
    validate.schemaEnv = true;
    return validate;
  };
}
