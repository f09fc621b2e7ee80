/** Writes schema/job-file.schema.json from the TypeBox source: `npx tsx src/jobfile/write-schema.ts`. */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { projectRoot } from "../config/paths.ts";
import { jobFileJsonSchema } from "./schema.ts";

export const schemaFilePath = (): string => join(projectRoot(), "schema", "job-file.schema.json");

export function renderSchemaFile(): string {
  return `${JSON.stringify(jobFileJsonSchema(), null, 2)}\n`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  writeFileSync(schemaFilePath(), renderSchemaFile());
  console.log(`wrote ${schemaFilePath()}`);
}
