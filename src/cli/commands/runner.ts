/**
 * `deltaci runner`: the composition root of one runner process. Reads (and deletes) the
 * registration token file, builds the HTTP client, retry policy and sandbox backend, runs
 * `runRunner`, and exits with its status (0: job reported or no job; 1: job not reported;
 * 2: could not start). SIGTERM/SIGINT stop the runner (a running job is reported as runner_error).
 */
import { readFile, rm } from "node:fs/promises";
import { hostname } from "node:os";
import type { Command } from "commander";
import { pino } from "pino";
import { systemClock } from "../../base/clock.ts";
import { HttpClient } from "../../client/http.ts";
import { RetryPolicy } from "../../client/retry-policy.ts";
import { RunnerClient } from "../../client/runner-client.ts";
import { runnerConfig, type RunnerFlags } from "../../config/runner-config.ts";
import { CrunSandboxFactory } from "../../sandbox/oci/crun-sandbox-factory.ts";
import { ProcessSandboxFactory } from "../../sandbox/process/process-sandbox.ts";
import { slotInfo } from "../../sandbox/slots.ts";
import type { SandboxFactory } from "../../sandbox/types.ts";
import { runRunner } from "../../runner/runner.ts";

const VERSION = "0.1.0";

export function registerRunnerCommand(program: Command): void {
  program
    .command("runner")
    .description("run one job: register, lease, run the steps in a sandbox, upload logs and artifacts, report, exit")
    .option("--server <url>", "control plane URL (env DELTACI_SERVER)")
    .option("--registration-token-file <file>", "file holding a registration token; read and deleted at start")
    .option("--labels <a,b>", "labels this runner offers")
    .option("--isolation <oci|process>", "sandbox backend: oci (crun, default) or process (NO isolation, development only)")
    .option("--work-dir <dir>", "this runner's slot directory (sandboxes, log spool)")
    .option("--slot <n>", "runner slot: selects the host uid range and cgroup of the sandbox", "0")
    .option("--idle-timeout <duration>", "exit when no job comes for this long (default 5m)")
    .option("--cancel-grace <duration>", "SIGTERM → SIGKILL grace on a graceful cancel (default 10s)")
    .option("--request-timeout <duration>", "hard timeout of one request (default 15s)")
    .option("--log-flush-interval <duration>", "log upload interval (default 250ms)")
    .option("--name <name>", "runner name shown by the control plane")
    .option("--no-prewarm", "do not build a sandbox for the expected job while waiting for one")
    .option("--insecure-registries <list>", "host[:port],... pulled without TLS verification (env DELTACI_INSECURE_REGISTRIES)")
    .option("--image-roots <dirs>", "dirs below which jobs may name local OCI images (env DELTACI_IMAGE_ROOTS; default /var/cache/deltaci/images)")
    .option("--log-level <level>", "runner's own diagnostics on stderr: error|warn|info|debug|silent", undefined)
    .action(async (flags: RunnerFlags) => {
      // Exit explicitly: a runner must end once its job is reported, whatever handle lingers.
      process.exit(await runnerMain(flags));
    });
}

async function runnerMain(flags: RunnerFlags): Promise<number> {
  const cfg = runnerConfig(flags, process.env, hostname());
  const logger = pino({ level: cfg.logLevel, base: { component: "runner", slot: cfg.slot } }, pino.destination(2));
  // The token is read once and deleted: nothing of it stays on disk.
  let token: string;
  try {
    token = (await readFile(cfg.registrationTokenFile, "utf8")).trim();
  } catch (err) {
    logger.error({ err: String(err) }, "cannot read the registration token file");
    return 2;
  }
  await rm(cfg.registrationTokenFile, { force: true });

  const slot = { ...slotInfo(cfg.slot, cfg.cacheDir), workDir: cfg.workDir };
  const sandboxFactory: SandboxFactory = cfg.isolation === "oci"
    ? new CrunSandboxFactory({ clock: systemClock, logger, cgroupParent: "deltaci", insecureRegistries: cfg.insecureRegistries, ...(cfg.imageRoots ? { imageRoots: cfg.imageRoots } : {}), trace: (phase, ms) => logger.debug({ phase, ms: Math.round(ms * 10) / 10 }, "sandbox phase") })
    : new ProcessSandboxFactory({ clock: systemClock, logger });
  const retry = new RetryPolicy({ clock: systemClock, onRetry: (err, attempt, waitMs) => logger.debug({ err: String(err), attempt, waitMs }, "retrying") });
  const client = new RunnerClient({ http: new HttpClient(cfg.serverUrl, { timeoutMs: cfg.requestTimeoutMs }), retry, requestTimeoutMs: cfg.requestTimeoutMs });
  const stop = new AbortController();
  const onSignal = (sig: string) => {
    logger.warn({ signal: sig }, "stopping");
    stop.abort(new Error(sig));
  };
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
  let res;
  try {
    res = await runRunner({
      registrationToken: token, name: cfg.name, version: VERSION, labels: cfg.labels, slot, cacheDir: cfg.cacheDir,
      idleTimeoutMs: cfg.idleTimeoutMs, leaseWaitMs: cfg.leaseWaitMs, registerDeadlineMs: cfg.registerDeadlineMs, prewarm: cfg.prewarm,
      timings: {
        flushIntervalMs: cfg.logFlushIntervalMs, flushBytes: cfg.logFlushBytes, chunkBytes: cfg.logChunkBytes,
        cancelGraceMs: cfg.cancelGraceMs, tailUploadMs: cfg.tailUploadMs, disposeMs: cfg.disposeMs,
      },
    }, { client, sandboxFactory, clock: systemClock, logger, signal: stop.signal });
  } finally {
    // This process owns the factory: a prewarmed sandbox no job took is disposed of before exit.
    await sandboxFactory.close().catch((err: unknown) => logger.error({ err: String(err) }, "closing the sandbox factory failed"));
  }
  process.off("SIGTERM", onSignal);
  process.off("SIGINT", onSignal);
  return res.code;
}
