/**
 * `deltaci runner`: the composition root of one runner process. Reads (and deletes) the
 * registration token file, builds the HTTP client, retry policy and sandbox backend, runs
 * `runRunner`, and exits with its status (0: job reported or no job; 1: job not reported;
 * 2: could not start). SIGTERM/SIGINT stop the runner (a running job is reported as runner_error);
 * SIGUSR2 drains it (it ends unless it already leased a job, which then runs to its end).
 */
import { appendFileSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { hostname } from "node:os";
import type { Command } from "commander";
import { pino, type Logger } from "pino";
import { systemClock } from "../../base/clock.ts";
import { runnerConfig, runnerSettings, type RunnerConfig, type RunnerFlags } from "../../config/runner-config.ts";
import { CrunSandboxFactory } from "../../sandbox/oci/crun-sandbox-factory.ts";
import { ProcessSandboxFactory } from "../../sandbox/process/process-sandbox.ts";
import { slotInfo } from "../../sandbox/slots.ts";
import type { SandboxFactory } from "../../sandbox/types.ts";
import { createRunner } from "../../runner/create-runner.ts";
import { DRAIN_SIGNAL, ignoreRunnerEvents, type RunnerEventListener } from "../../runner/runner-events.ts";

export function registerRunnerCommand(program: Command): void {
  program
    .command("runner")
    .description("run one job: register, lease, run the steps in a sandbox, upload logs and artifacts, report, exit")
    .option("--server <url>", "control plane URL (env DELTACI_SERVER); several replicas: comma-separated (failover)")
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
    .option("--events-file <file>", "append the runner's typed events (registered, leased, job_ended) to this file, one JSON line each: its supervisor's channel")
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
  const sandboxFactory = runnerSandboxFactory(cfg, logger);
  const stop = new AbortController();
  const onSignal = (sig: string) => {
    logger.warn({ signal: sig }, "stopping");
    stop.abort(new Error(sig));
  };
  // A drain (the controller's, for a runner it saw idle): no job yet, it ends; a job leased meanwhile runs to its end.
  const drain = new AbortController();
  const onDrain = () => {
    logger.info("drain asked");
    drain.abort(new Error(DRAIN_SIGNAL));
  };
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
  process.on(DRAIN_SIGNAL, onDrain); // not once: a second drain must not meet the default action (exit)
  let res;
  try {
    const onEvent = cfg.eventsFile === null ? ignoreRunnerEvents : eventsFileWriter(cfg.eventsFile);
    const runner = createRunner(runnerSettings(cfg), { registrationToken: token, name: cfg.name, slot, reapSlot: true }, { sandboxFactory, clock: systemClock, logger, onEvent });
    res = await runner.run(stop.signal, drain.signal);
  } finally {
    // This process owns the factory: a prewarmed sandbox no job took is disposed of before exit.
    await sandboxFactory.close().catch((err: unknown) => logger.error({ err: String(err) }, "closing the sandbox factory failed"));
  }
  process.off("SIGTERM", onSignal);
  process.off("SIGINT", onSignal);
  // The drain listener stays: without it a late drain would meet SIGUSR2's default action (exit by signal).
  return res.code;
}

/** The sandbox backend of a runner process or a runner host (the only place either builds one); a host passes `spareDisks: true`. */
export function runnerSandboxFactory(cfg: Pick<RunnerConfig, "isolation" | "insecureRegistries" | "imageRoots">, logger: Logger, use: { spareDisks: boolean } = { spareDisks: false }): SandboxFactory {
  return cfg.isolation === "oci"
    ? new CrunSandboxFactory({
      clock: systemClock, logger, cgroupParent: "deltaci", insecureRegistries: cfg.insecureRegistries, ...(cfg.imageRoots ? { imageRoots: cfg.imageRoots } : {}),
      // A runner host serves many jobs per slot: the slot's next job disk is made as soon as it frees up.
      spareDisks: use.spareDisks,
      trace: (phase, ms) => logger.debug({ phase, ms: Math.round(ms * 10) / 10 }, "sandbox phase"),
    })
    : new ProcessSandboxFactory({ clock: systemClock, logger });
}

/**
 * Appends each event as one JSON line (a job's report stays out: the supervisor needs only the
 * state change). Synchronous: one small write per event, and a `leased` line is on disk before
 * the job's first step starts.
 */
function eventsFileWriter(file: string): RunnerEventListener {
  return (e) => {
    const line = e.type === "registered" ? { type: e.type, runnerId: e.runnerId } : { type: e.type, runnerId: e.runnerId, jobId: e.jobId, ...(e.type === "leased" ? { attempt: e.attempt } : {}) };
    appendFileSync(file, JSON.stringify(line) + "\n", { mode: 0o600 });
  };
}
