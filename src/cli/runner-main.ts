/**
 * Entry of the runner-only bundle (dist/runner.cjs, run by dist/runner-main.cjs): `deltaci runner …` without loading the
 * server, controller and CLI libraries, so a runner spawned per job starts fast. Same command,
 * same flags as `deltaci runner` in main.ts; bin/deltaci.js picks this entry for `runner`.
 */
import { Command } from "commander";
import { registerRunnerCommand } from "./commands/runner.ts";
import { registerRunnerHostCommand } from "./commands/runner-host.ts";

const program = new Command("deltaci").enablePositionalOptions();
registerRunnerCommand(program);
registerRunnerHostCommand(program);
// No top-level await: the bundle is CommonJS (run with a V8 code cache, scripts/code-cache-loader.cjs).
// A rejection stays unhandled, as a top-level await's would: node prints it and exits 1.
void program.parseAsync(process.argv);
