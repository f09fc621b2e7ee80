/**
 * Route validators compiled on a route's first request, not at start-up: compiling every
 * route's schemas (ajv code generation) was most of the server's start time, and most routes
 * of a short-lived embedded server (`deltaci run`) are never called. Same Ajv options as
 * Fastify's default compiler with the server's overrides (no coercion, no defaults, no removal,
 * first error only); the protocol schemas use no formats and no external $refs.
 */
import { Ajv, type ValidateFunction } from "ajv";
import type { FastifySchemaCompiler, ValidationResult } from "fastify";

interface LazyValidator {
  (data: unknown, ctx?: unknown): boolean;
  errors?: ValidationResult[] | null;
  /** Fastify passes the parent (request) to a validator that has this, as it does to Ajv's. */
  schemaEnv: true;
}

export function lazyValidatorCompiler(): FastifySchemaCompiler<unknown> {
  let ajv: Ajv | null = null;
  return ({ schema }) => {
    let compiled: ValidateFunction | null = null;
    const validate = ((data: unknown, ctx?: unknown) => {
      ajv ??= new Ajv({ coerceTypes: false, useDefaults: false, removeAdditional: false, addUsedSchema: false, allErrors: false });
      compiled ??= ajv.compile(schema as object);
      const ok = ctx === undefined ? compiled(data) : compiled(data, ctx as Parameters<ValidateFunction>[1]);
      validate.errors = compiled.errors as ValidationResult[] | null;
      return ok;
    }) as LazyValidator;
    validate.schemaEnv = true;
    return validate;
  };
}
