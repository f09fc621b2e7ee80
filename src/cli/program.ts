/** The `deltaci` command tree (no side effects: main.ts runs it, the README's help is generated from it). */
import { Command } from "commander";
import { registerControllerCommand } from "./commands/controller.ts";
import { registerJobCommands } from "./commands/jobs.ts";
import { registerRunnerCommand } from "./commands/runner.ts";
import { registerRunnerHostCommand } from "./commands/runner-host.ts";
import { registerServerCommand } from "./commands/server.ts";

export function buildProgram(): Command {
  const program = new Command("deltaci")
    .description("Delta CI: run CI jobs in isolated, disposable sandboxes — locally or as a fleet")
    .version("0.1.0")
    .showHelpAfterError()
    .enablePositionalOptions()
    .exitOverride();
  registerJobCommands(program);
  registerServerCommand(program);
  registerControllerCommand(program);
  registerRunnerCommand(program);
  registerRunnerHostCommand(program);
  return program;
}

/** The README's help section: `deltaci --help` and every command's own help, at 80 columns. */
export function readmeHelp(): string {
  const program = buildProgram();
  program.configureHelp({ helpWidth: 80 });
  const parts = ["```console", "$ deltaci --help", program.helpInformation().trimEnd(), "```", "", "Each command's own help (`deltaci COMMAND --help`):", ""];
  for (const cmd of program.commands) {
    cmd.configureHelp({ helpWidth: 80 });
    parts.push(`<details><summary><code>deltaci ${cmd.name()} --help</code></summary>`, "", "```", cmd.helpInformation().trimEnd(), "```", "", "</details>", "");
  }
  return parts.join("\n");
}
