/** The README's help section is what the command tree prints (regenerate: npx tsx scripts/readme-help.ts). */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { readmeHelp } from "../src/cli/program.ts";

void test("README.md shows the current --help of every command", () => {
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
  const m = /<!-- help:begin[^\n]*-->\n([\s\S]*)\n<!-- help:end -->/.exec(readme);
  assert.ok(m?.[1], "README.md has the help:begin/help:end markers");
  assert.equal(m[1], readmeHelp(), "README.md's help is stale: run `npx tsx scripts/readme-help.ts`");
});
