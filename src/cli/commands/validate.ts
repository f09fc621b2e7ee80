/** `deltaci validate [FILE...]`: checks job files without running anything (exit 0 valid, 2 invalid). */
import type { Command } from "commander";
import { relative } from "node:path";
import { JobFileParser, formatIssue, type JobFileIssue } from "../../jobfile/parse.ts";
import { readFileSync } from "node:fs";
import { CliExit, ExitCode } from "../exit.ts";
import { resolveJobFile } from "../load-jobs.ts";

export function registerValidateCommand(program: Command): void {
  program
    .command("validate")
    .argument("[files...]", "job files (default: .deltaci.yml or deltaci.yml here)")
    .description("check job files against the schema; errors name file:line:column and the field")
    .option("--json", "print {file, valid, jobs, issues} per file as JSON")
    .action((files: string[], opts: { json?: boolean }) => {
      const cwd = process.cwd();
      const parser = new JobFileParser();
      const results: Array<{ file: string; valid: boolean; jobs: string[]; issues: JobFileIssue[] }> = [];
      for (const f of files.length > 0 ? files : [undefined]) {
        const path = resolveJobFile(f, cwd);
        const shown = relative(cwd, path).startsWith("..") ? path : relative(cwd, path);
        let text: string;
        try {
          text = readFileSync(path, "utf8");
        } catch (err) {
          throw new CliExit(ExitCode.usage, `deltaci: cannot read ${shown}: ${(err as Error).message}`);
        }
        const r = parser.parse(text, shown);
        results.push(r.ok ? { file: shown, valid: true, jobs: r.jobs.map((j) => j.name), issues: [] } : { file: shown, valid: false, jobs: [], issues: r.issues });
      }
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(results.length === 1 ? results[0] : results, null, 2)}\n`);
      } else {
        for (const r of results) {
          if (r.valid) process.stdout.write(`${r.file}: valid (${r.jobs.length} job${r.jobs.length === 1 ? "" : "s"}: ${r.jobs.join(", ")})\n`);
          else process.stderr.write(`${r.issues.map(formatIssue).join("\n")}\n${r.issues.length} error${r.issues.length === 1 ? "" : "s"} in ${r.file}\n`);
        }
      }
      if (results.some((r) => !r.valid)) throw new CliExit(ExitCode.usage);
    });
}
