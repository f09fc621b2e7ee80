/** Rewrites the README's generated help section from the command tree: `npx tsx scripts/readme-help.ts`. */
import { readFileSync, writeFileSync } from "node:fs";
import { readmeHelp } from "../src/cli/program.ts";

const BEGIN = "<!-- help:begin (generated from `deltaci --help` and `deltaci COMMAND --help`) -->";
const END = "<!-- help:end -->";
const path = new URL("../README.md", import.meta.url).pathname;
const text = readFileSync(path, "utf8");
const start = text.indexOf(BEGIN);
const end = text.indexOf(END);
if (start < 0 || end < start) throw new Error("README.md has no help:begin/help:end markers");
writeFileSync(path, `${text.slice(0, start + BEGIN.length)}\n${readmeHelp()}\n${text.slice(end)}`);
