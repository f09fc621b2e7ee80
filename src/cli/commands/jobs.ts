/** The user-facing commands of the CLI issue: validate, run, up, and the remote job commands. */
import type { Command } from "commander";
import { registerValidateCommand } from "./validate.ts";
import { registerRemoteCommands } from "../remote/remote-commands.ts";
import { registerRunCommand } from "../run/run-command.ts";
import { registerUpCommand } from "./up.ts";

export function registerJobCommands(program: Command): void {
  registerRunCommand(program);
  registerValidateCommand(program);
  registerUpCommand(program);
  registerRemoteCommands(program);
}
