/**
 * `deltaci controller`: composition root of the runner controller. Exports its option helpers so
 * `deltaci up` can take the same flags (`addControllerOptions`, `controllerOptionsFromFlags`) and
 * `slotReaper()` (the sandbox's slot reaping behind the controller's `SlotReaper` seam).
 */
import { mkdir, readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { Option, type Command } from "commander";
import { pino, type Logger } from "pino";
import { systemClock } from "../../base/clock.ts";
import { DeltaError, isDeltaError } from "../../base/errors.ts";
import { parseDurationMs } from "../../base/units.ts";
import { controllerDefaults, hostPoolDefaults, parseIsolation, parseLabels, resolvePools } from "../../config/controller-config.ts";
import { RUNNER_HOST_NODE_FLAGS, selfCommand } from "../../config/paths.ts";
import { RUNNER_MODES, startController, type ControllerOptions, type Pool, type RunningController, type SlotReaper } from "../../controller/index.ts";
import { defaults } from "../../config/defaults.ts";
import { workDirReaper } from "../../controller/local-provider.ts";
import { CrunSandboxFactory } from "../../sandbox/oci/crun-sandbox-factory.ts";
import { ProcessSandboxFactory } from "../../sandbox/process/process-sandbox.ts";
import { assertTraversable, slotInfo } from "../../sandbox/slots.ts";
import type { SandboxFactory } from "../../sandbox/types.ts";
import { usageError, type CliExit } from "../exit.ts";

/** The controller's flags as commander parses them. */
export interface ControllerFlags {
  maxRunners: string;
  minIdle: string;
  pool: string[];
  labels?: string;
  isolation: string;
  workRoot: string;
  runnerIdleTimeout: string;
  idleGrace: string;
  metricsListen?: string;
  slotBase?: string;
  runnerMode?: string;
  hostMaxSessions?: string;
  hostMaxAge?: string;
}

/** Adds the controller's scaling and runner flags (not `--server` / `--controller-token-file`). */
export function addControllerOptions(cmd: Command): Command {
  return cmd
    .option("--max-runners <n>", "most runners alive at once", String(controllerDefaults.maxRunners))
    .option("--min-idle <n>", "warm runners kept waiting for a job, per pool (default for pools that do not set min-idle)", String(controllerDefaults.minIdle))
    .addOption(new Option("--pool <spec>", "a runner pool, repeatable: NAME[:labels=a,b][:max=N][:min-idle=N][:isolation=oci|process][:os=..][:arch=..][:cpus=N][:memory=2Gi][:disk=10Gi]").argParser((v: string, prev: string[] = []) => [...prev, v]).default([]))
    .option("--labels <a,b>", "labels of the default pool's runners (and default labels of --pool entries)")
    .option("--isolation <oci|process>", "sandbox backend of the runners (process: no isolation, development only)", "oci")
    .option("--work-root <dir>", "where runner slots (state, logs, work dirs) live", controllerDefaults.workRoot)
    .option("--runner-idle-timeout <duration>", "a runner exits when no job came for this long", "5m")
    .option("--idle-grace <duration>", "an idle runner is drained only after this long", `${controllerDefaults.idleGraceMs}ms`)
    .option("--metrics-listen <host:port>", "serve Prometheus /metrics here")
    .option("--slot-base <n>", "first runner slot index (slots select uid ranges and cgroups; controllers on one host need disjoint ranges)", "0")
    .addOption(new Option("--runner-mode <mode>", "session: runners are sessions in a warm runner host process (fast); process: one process per runner (a runner bug stays in one job)").choices([...RUNNER_MODES]).default("session"))
    .option("--host-max-sessions <n>", "session mode: a runner host is recycled after this many sessions", String(defaults.hostMaxSessions))
    .option("--host-max-age <duration>", "session mode: a runner host is recycled after this long", "1h");
}

function int(text: string, flag: string, min: number): number {
  if (!/^\d+$/.test(text) || Number(text) < min) throw new DeltaError("E_INVALID", `${flag}: expected an integer ≥ ${min}, got "${text}"`);
  return Number(text);
}

/** `HOST:PORT` → parts. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text.trim());
  if (!m || Number(m[3]) > 65535) throw new DeltaError("E_INVALID", `invalid listen address "${text}" (expected HOST:PORT)`);
  return { host: m[1] ?? (m[2] || "127.0.0.1"), port: Number(m[3]) };
}

export function controllerOptionsFromFlags(flags: ControllerFlags, conn: { serverUrl: string; controllerToken: string }): ControllerOptions {
  const maxRunners = int(flags.maxRunners, "--max-runners", 1);
  const minIdle = int(flags.minIdle, "--min-idle", 0);
  const workRoot = resolve(flags.workRoot);
  const host = hostPoolDefaults(workRoot);
  const pools = resolvePools(flags.pool, {
    ...host, max: maxRunners, minIdle: Math.min(minIdle, maxRunners), isolation: parseIsolation(flags.isolation), labels: flags.labels ? parseLabels(flags.labels) : [],
  });
  return {
    serverUrl: conn.serverUrl, controllerToken: conn.controllerToken, pools, maxRunners, workRoot,
    runnerIdleTimeoutMs: parseDurationMs(flags.runnerIdleTimeout), idleGraceMs: parseDurationMs(flags.idleGrace),
    metricsListen: flags.metricsListen ? parseListen(flags.metricsListen) : null,
    slotBase: int(flags.slotBase ?? "0", "--slot-base", 0),
    runnerMode: flags.runnerMode === "process" ? "process" : "session",
    hostMaxSessions: int(flags.hostMaxSessions ?? String(defaults.hostMaxSessions), "--host-max-sessions", 1),
    hostMaxAgeMs: parseDurationMs(flags.hostMaxAge ?? defaults.hostMaxAgeMs),
  };
}

/**
 * Reaps a dead runner's slot with each sandbox backend's own `reapSlot` (containers, mounts,
 * cgroups, loop devices, job dirs), with the slot as the runner builds it from `--slot` and
 * `--work-dir`; then whatever is still in the work dir.
 */
export function slotReaper(factories: ReadonlyArray<() => SandboxFactory>): SlotReaper {
  return {
    async reap(slot) {
      const info = { ...slotInfo(slot.index, dirname(slot.workDir)), workDir: slot.workDir };
      const removed: string[] = [];
      const errors: unknown[] = [];
      for (const f of factories) {
        try {
          removed.push(...(await f().reapSlot(info)));
        } catch (err) {
          errors.push(err);
        }
      }
      removed.push(...(await workDirReaper.reap(slot)));
      if (errors.length > 0) throw new AggregateError(errors, `reaping slot ${slot.index} failed (removed: ${removed.join(", ") || "nothing"})`);
      return removed;
    },
  };
}

/** The reaper for these pools: the oci backend's (same cgroup parent as the runner) where a pool uses it. */
export function defaultSlotReaper(pools: readonly Pool[], logger: Logger): SlotReaper {
  const sandboxLogger = { info: (f: Record<string, unknown>, m: string) => logger.info(f, m), warn: (f: Record<string, unknown>, m: string) => logger.warn(f, m) };
  let oci: CrunSandboxFactory | null = null;
  const factories: Array<() => SandboxFactory> = [];
  if (pools.some((p) => p.isolation === "oci")) factories.push(() => (oci ??= new CrunSandboxFactory({ clock: systemClock, logger: sandboxLogger, cgroupParent: "deltaci" })));
  factories.push(() => new ProcessSandboxFactory({ clock: systemClock, logger: sandboxLogger }));
  return slotReaper(factories);
}

/**
 * Creates the runners' work root before anything starts (new directories 0711: traversable, not
 * listable; so `deltaci up` makes a fresh `./.deltaci` that way before the server puts its
 * owner-only files in it). With an oci pool, the sandbox's unprivileged uids must reach the slot
 * work dirs: a path they cannot traverse is refused now, not by every job's sandbox later.
 */
export async function prepareWorkRoot(opts: Pick<ControllerOptions, "workRoot" | "pools" | "slotBase">, command: string): Promise<void> {
  await mkdir(opts.workRoot, { recursive: true, mode: 0o711 });
  if (!opts.pools.some((p) => p.isolation === "oci")) return;
  const { workDir } = slotInfo(opts.slotBase ?? 0, opts.workRoot);
  await mkdir(workDir, { recursive: true, mode: 0o711 });
  try {
    await assertTraversable(workDir);
  } catch (err) {
    if (!isDeltaError(err, "E_SANDBOX")) throw err;
    throw refusal(command, err.message);
  }
}

function refusal(command: string, problem: string): CliExit {
  return usageError(`deltaci ${command}: ${problem}\n  The oci sandbox's unprivileged uids must traverse every directory down to the slots: chmod o+x that directory, or pass --work-root DIR below traversable ones.`);
}

/** Starts the controller in this process with the local provider and the sandbox's reaper. */
export async function startLocalController(opts: ControllerOptions, logger: Logger): Promise<RunningController> {
  return startController(opts, { command: selfCommand(), hostCommand: selfCommand(RUNNER_HOST_NODE_FLAGS), reaper: defaultSlotReaper(opts.pools, logger), logger, clock: systemClock });
}

export function registerControllerCommand(program: Command): void {
  const cmd = program
    .command("controller")
    .description("provision runners on this machine: scale on queue depth, match capabilities, enforce limits, recover after a restart")
    .requiredOption("--server <url>", "the control plane's URL; several replicas: comma-separated (failover)")
    .requiredOption("--controller-token-file <file>", "file holding the controller token")
    .option("--log-level <level>", "log level (debug, info, warn, error)", "info");
  addControllerOptions(cmd).action(async (flags: ControllerFlags & { server: string; controllerTokenFile: string; logLevel: string }) => {
    const logger = pino({ level: flags.logLevel, base: { component: "controller" } }, pino.destination(2));
    const controllerToken = (await readFile(flags.controllerTokenFile, "utf8")).trim();
    const opts = controllerOptionsFromFlags(flags, { serverUrl: flags.server, controllerToken });
    await prepareWorkRoot(opts, "controller");
    const controller = await startLocalController(opts, logger);
    logger.info({ pools: opts.pools.map((p) => `${p.name}[${p.labels.join(",")}] max=${p.max} min-idle=${p.minIdle} ${p.isolation}`), maxRunners: opts.maxRunners, workRoot: opts.workRoot, metrics: controller.metricsUrl }, "controller running");
    await new Promise<void>((done) => {
      const stop = (sig: string) => {
        logger.info({ signal: sig }, "stopping; runners keep running and the next controller adopts them");
        void controller.stop().finally(done);
      };
      process.once("SIGTERM", () => stop("SIGTERM"));
      process.once("SIGINT", () => stop("SIGINT"));
    });
  });
}
