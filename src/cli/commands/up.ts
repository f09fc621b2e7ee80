/**
 * `deltaci up`: the server and the runner controller in one long-lived process, for one
 * machine. Takes every flag of `deltaci server` and `deltaci controller`; prints the URL and
 * where the tokens are. SIGINT/SIGTERM stop the controller (its runners are terminated) and
 * then the server.
 */
import type { Command } from "commander";
import { resolve } from "node:path";
import { startServer } from "../../server/index.ts";
import { addServerOptions, serverLogger, serverOptionsFromFlags, type ServerFlags } from "./server.ts";
import { addControllerOptions, controllerOptionsFromFlags, prepareWorkRoot, startLocalController, type ControllerFlags } from "./controller.ts";
import { checkIsolation } from "../run/isolation.ts";
import { usageError } from "../exit.ts";

export function registerUpCommand(program: Command): void {
  const cmd = program
    .command("up")
    .description("run the server and the runner controller together on this machine (takes the flags of `server` and `controller`)");
  addControllerOptions(addServerOptions(cmd)).action(async (flags: ServerFlags & ControllerFlags) => {
    if (flags.isolation === "oci") {
      const problem = await checkIsolation();
      if (problem) throw usageError(`deltaci up: the oci sandbox (crun) does not work on this machine: ${problem}\n  Fix that, or use --isolation process (no isolation, development only).`);
    }
    const controllerOpts = controllerOptionsFromFlags(flags, { serverUrl: "", controllerToken: "" });
    // Before the server: the default work root lies in its data dir, which must then be traversable.
    await prepareWorkRoot(controllerOpts, "up");
    const logger = serverLogger(flags.logLevel);
    const server = await startServer(serverOptionsFromFlags(flags, logger.child({ component: "server" })));
    let controller;
    try {
      controller = await startLocalController({ ...controllerOpts, serverUrl: server.url, controllerToken: server.controllerToken }, logger.child({ component: "controller" }));
    } catch (err) {
      await server.close();
      throw err;
    }
    // One write, so a reader that sees the URL also sees where the tokens are.
    const lines = [
      `deltaci up: server ready at ${server.url}`,
      `  data dir:         ${server.dataDir}`,
      `  API token:        ${server.apiTokenFile ?? "from DELTACI_API_TOKEN"}`,
      `  controller token: ${server.controllerTokenFile ?? "from DELTACI_CONTROLLER_TOKEN"}`,
      `  runners:          up to ${flags.maxRunners}, ${flags.isolation} isolation, work root ${resolve(flags.workRoot)}`,
      `  try:              DELTACI_SERVER=${server.url} deltaci submit examples/hello/deltaci.yml${server.apiTokenFile ? ` --token-file ${server.apiTokenFile}` : ""}`,
    ];
    if (flags.isolation === "process") lines.push("  warning: --isolation process runs jobs WITHOUT a sandbox (development only)");
    process.stdout.write(`${lines.join("\n")}\n`);
    const running = controller;
    await new Promise<void>((done) => {
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        logger.info({ signal }, "shutting down: stopping runners, controller and server");
        void running
          .stop({ runners: "terminate", timeoutMs: 10_000 })
          .catch((err: unknown) => logger.error({ err }, "controller stop failed"))
          .then(() => server.close())
          .catch((err: unknown) => logger.error({ err }, "server close failed"))
          .finally(done);
      };
      process.once("SIGTERM", () => stop("SIGTERM"));
      process.once("SIGINT", () => stop("SIGINT"));
    });
  });
}
