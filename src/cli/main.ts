/** The `deltaci` command: one composition root per subcommand, registered here. */
import { Command } from "commander";
import { registerServerCommand } from "./commands/server.ts";
import { registerRunnerCommand } from "./commands/runner.ts";
import { registerControllerCommand } from "./commands/controller.ts";
import { registerJobCommands } from "./commands/jobs.ts";

const program = new Command("deltaci")
  .description("Delta CI: run CI jobs in isolated, disposable sandboxes — locally or as a fleet")
  .version("0.1.0")
  .showHelpAfterError()
  .enablePositionalOptions();

registerJobCommands(program);
registerServerCommand(program);
registerControllerCommand(program);
registerRunnerCommand(program);

await program.parseAsync(process.argv);
