/**
 * Entry of the runner-only bundle (dist/runner.mjs): `deltaci runner …` without loading the
 * server, controller and CLI libraries, so a runner spawned per job starts fast. Same command,
 * same flags as `deltaci runner` in main.ts; bin/deltaci.js picks this entry for `runner`.
 */
import { Command } from "commander";
import { registerRunnerCommand } from "./commands/runner.ts";
import { registerRunnerHostCommand } from "./commands/runner-host.ts";

const program = new Command("deltaci").enablePositionalOptions();
registerRunnerCommand(program);
registerRunnerHostCommand(program);
await program.parseAsync(process.argv);
