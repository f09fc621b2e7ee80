/** The `deltaci` command: one composition root per subcommand, registered here. */
import { Command, CommanderError } from "commander";
import { isDeltaError } from "../base/errors.ts";
import { registerServerCommand } from "./commands/server.ts";
import { registerRunnerCommand } from "./commands/runner.ts";
import { registerControllerCommand } from "./commands/controller.ts";
import { registerJobCommands } from "./commands/jobs.ts";
import { CliExit, ExitCode } from "./exit.ts";

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

/** Usage errors exit 2 (as documented), help and version 0, and a command's CliExit its own code. */
function exitCodeOf(err: unknown): number {
  if (err instanceof CliExit) {
    if (err.message) process.stderr.write(`${err.message.endsWith("\n") ? err.message : `${err.message}\n`}`);
    return err.exitCode;
  }
  if (err instanceof CommanderError) {
    if (err.code === "commander.helpDisplayed" || err.code === "commander.version" || err.code === "commander.help") return ExitCode.ok;
    return err.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
  }
  if (isDeltaError(err)) {
    process.stderr.write(`deltaci: ${err.message} (${err.code})\n`);
    return err.code === "E_INVALID" ? ExitCode.usage : ExitCode.jobFailed;
  }
  process.stderr.write(`deltaci: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  return ExitCode.jobFailed;
}

try {
  await program.parseAsync(process.argv);
} catch (err) {
  process.exitCode = exitCodeOf(err);
}
