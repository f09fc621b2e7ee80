/** The `deltaci` command: one composition root per subcommand, registered here. */
import { CommanderError } from "commander";
import { isDeltaError } from "../base/errors.ts";
import { CliExit, ExitCode } from "./exit.ts";
import { buildProgram } from "./program.ts";

const program = buildProgram();

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

// No top-level await: the bundle is CommonJS (run with a V8 code cache, scripts/code-cache-loader.cjs).
program.parseAsync(process.argv).catch((err: unknown) => {
  process.exitCode = exitCodeOf(err);
});
