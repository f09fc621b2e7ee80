/**
 * The bundle's precompiled validators (scripts/precompile-validators.ts, put in place by
 * scripts/build.mjs) judge as the run-time compiled ones do: same verdicts, same errors, on
 * the example job files, broken copies of them, and request bodies; and every route schema the
 * generator lists is found by the key the server looks up.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Ajv } from "ajv";
import { build } from "esbuild";
import { parse as parseYaml } from "yaml";
import { precompiledValidatorsSource, routeSchemas } from "../scripts/precompile-validators.ts";
import { validatorKey, type PrecompiledValidator } from "../src/base/precompiled-validators.ts";
import { projectRoot } from "../src/config/paths.ts";
import { JobFileSchema } from "../src/jobfile/schema.ts";
import { jobFileAjvOptions } from "../src/jobfile/schema-errors.ts";
import { SubmitJobRequest } from "../src/protocol/schemas.ts";
import { routeAjvOptions } from "../src/server/http/lazy-validators.ts";

const root = projectRoot();

/** The module as the build makes it: the sources' empty map replaced by the generated validators. */
async function generatedValidators(): Promise<ReadonlyMap<string, PrecompiledValidator>> {
  const path = join(root, "src", "base", "precompiled-validators.ts");
  const empty = "export const precompiledValidators: ReadonlyMap<string, PrecompiledValidator> = new Map();";
  const source = readFileSync(path, "utf8");
  assert.ok(source.includes(empty), "the build replaces this declaration (scripts/build.mjs)");
  const out = await build({
    stdin: { contents: source.replace(empty, () => precompiledValidatorsSource()), loader: "ts", resolveDir: join(root, "src", "base") },
    bundle: true, platform: "node", format: "esm", write: false, logLevel: "warning",
  });
  const code = out.outputFiles[0]?.text ?? "";
  const mod = (await import(`data:text/javascript;base64,${Buffer.from(code).toString("base64")}`)) as { precompiledValidators: ReadonlyMap<string, PrecompiledValidator> };
  return mod.precompiledValidators;
}

const generated = await generatedValidators();

function sameJudgement(built: PrecompiledValidator, compiled: PrecompiledValidator, data: unknown, what: string): boolean {
  const ok = built(data);
  assert.equal(ok, compiled(data), `${what}: verdict`);
  assert.deepEqual(JSON.parse(JSON.stringify(built.errors ?? null)), JSON.parse(JSON.stringify(compiled.errors ?? null)), `${what}: errors`);
  return ok;
}

void test("the job file validator: same verdicts and errors as the compiled one, on the examples and broken copies", () => {
  const built = generated.get(validatorKey("jobfile", JobFileSchema));
  assert.ok(built, "the job file schema is precompiled");
  const compiled = new Ajv({ ...jobFileAjvOptions, code: { optimize: false } }).compile(JobFileSchema) as PrecompiledValidator;
  const files: string[] = [];
  for (const e of readdirSync(join(root, "examples"), { recursive: true, withFileTypes: true })) {
    if (e.isFile() && /deltaci\.ya?ml$/.test(e.name)) files.push(join(e.parentPath, e.name));
  }
  assert.ok(files.length > 0);
  let valid = 0;
  let invalid = 0;
  for (const file of files) {
    const data = parseYaml(readFileSync(file, "utf8")) as { jobs: Record<string, Record<string, unknown>> };
    if (sameJudgement(built, compiled, data, file)) valid++;
    for (const [name, job] of Object.entries(data.jobs)) {
      const broken = [{ ...job, stpes: job.steps }, { ...job, steps: "echo" }, { ...job, timeout: -1, limits: { cpus: "many" } }, { ...job, steps: [{ run: 3, nmae: "x" }] }];
      for (const [i, b] of broken.entries()) {
        if (!sameJudgement(built, compiled, { ...data, jobs: { ...data.jobs, [name]: b } }, `${file} ${name} broken #${i}`)) invalid++;
      }
    }
  }
  assert.equal(valid, files.length, "the examples are valid");
  assert.ok(invalid > 0, "broken copies are rejected");
});

void test("route validators: every listed route schema is precompiled under the server's key, and judges as the compiled one", () => {
  const ajv = new Ajv(routeAjvOptions);
  for (const schema of routeSchemas) assert.ok(generated.has(validatorKey("route", schema)), `precompiled: ${JSON.stringify(schema).slice(0, 80)}`);
  const built = generated.get(validatorKey("route", SubmitJobRequest));
  assert.ok(built);
  const compiled = ajv.compile(SubmitJobRequest) as PrecompiledValidator;
  for (const body of [{}, { spec: {}, fork: false }, { spec: null, fork: "no" }, { fork: true, secrets: { A: 1 } }, []]) {
    assert.equal(sameJudgement(built, compiled, body, JSON.stringify(body)), false);
  }
});
