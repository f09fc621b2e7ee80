/**
 * `deltaci controller`: composition root of the runner controller. Exports its option helpers so
 * `deltaci up` can take the same flags (`addControllerOptions`, `controllerOptionsFromFlags`) and
 * `slotReaper()` (the sandbox's slot reaping behind the controller's `SlotReaper` seam).
 */
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { Option, type Command } from "commander";
import { pino, type Logger } from "pino";
import { systemClock } from "../../base/clock.ts";
import { DeltaError } from "../../base/errors.ts";
import { parseDurationMs } from "../../base/units.ts";
import { controllerDefaults, hostPoolDefaults, parseIsolation, parseLabels, resolvePools } from "../../config/controller-config.ts";
import { selfCommand } from "../../config/paths.ts";
import { startController, type ControllerOptions, type Pool, type RunningController, type SlotReaper } from "../../controller/index.ts";
import { workDirReaper } from "../../controller/local-provider.ts";
import { CrunSandboxFactory } from "../../sandbox/oci/crun-sandbox-factory.ts";
import { ProcessSandboxFactory } from "../../sandbox/process/process-sandbox.ts";
import { slotInfo } from "../../sandbox/slots.ts";
import type { SandboxFactory } from "../../sandbox/types.ts";

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
    .option("--slot-base <n>", "first runner slot index (slots select uid ranges and cgroups; controllers on one host need disjoint ranges)", "0");
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

/** Starts the controller in this process with the local provider and the sandbox's reaper. */
export async function startLocalController(opts: ControllerOptions, logger: Logger): Promise<RunningController> {
  return startController(opts, { command: selfCommand(), reaper: defaultSlotReaper(opts.pools, logger), logger, clock: systemClock });
}

export function registerControllerCommand(program: Command): void {
  const cmd = program
    .command("controller")
    .description("provision runners on this machine: scale on queue depth, match capabilities, enforce limits, recover after a restart")
    .requiredOption("--server <url>", "the control plane's URL")
    .requiredOption("--controller-token-file <file>", "file holding the controller token")
    .option("--log-level <level>", "log level (debug, info, warn, error)", "info");
  addControllerOptions(cmd).action(async (flags: ControllerFlags & { server: string; controllerTokenFile: string; logLevel: string }) => {
    const logger = pino({ level: flags.logLevel, base: { component: "controller" } }, pino.destination(2));
    const controllerToken = (await readFile(flags.controllerTokenFile, "utf8")).trim();
    const opts = controllerOptionsFromFlags(flags, { serverUrl: flags.server, controllerToken });
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
