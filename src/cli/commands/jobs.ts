/** The user-facing commands of the CLI issue: validate, run, up, and the remote job commands. */
import type { Command } from "commander";
import { registerValidateCommand } from "./validate.ts";
import { registerRemoteCommands } from "../remote/remote-commands.ts";

export function registerJobCommands(program: Command): void {
  registerValidateCommand(program);
  registerRemoteCommands(program);
}
