/**
 * The all-in-one stack of `deltaci run`: an embedded server on a free loopback port with its
 * state in a fresh temp dir, and the runner controller in this process starting runners for
 * exactly the jobs at hand (warmed while the source is packed): in this process by default
 * (InProcessProvider: no process start per job), or as `deltaci runner` child processes. `close()` stops
 * runners, controller and server and removes the temp dir, whatever happened.
 */
import { chmod, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino, type Logger } from "pino";
import { defaults } from "../../config/defaults.ts";
import { hostPoolDefaults } from "../../config/controller-config.ts";
import { startServer, type RunningServer } from "../../server/index.ts";
import type { RunningController } from "../../controller/index.ts";
import type { Pool } from "../../controller/types.ts";
import type { ParsedJob } from "../../jobfile/parse.ts";
import { JobApiClient } from "../../client/job-api-client.ts";
import { startLocalController } from "../commands/controller.ts";
import { DeltaError } from "../../base/errors.ts";
import { systemClock } from "../../base/clock.ts";
import { startController } from "../../controller/index.ts";
import type { CrunSandboxFactory } from "../../sandbox/oci/crun-sandbox-factory.ts";
import { ProcessSandboxFactory } from "../../sandbox/process/process-sandbox.ts";
import type { SandboxFactory } from "../../sandbox/types.ts";
import { rememberShape } from "../../runner/warm-shape.ts";
import type { EarlyCrunFactory } from "./early-factory.ts";
import { InProcessProvider } from "./in-process-provider.ts";

export type Isolation = "oci" | "process";

/** Most jobs of one run at once (more wait for a free runner); also the run's slot stride. */
export const MAX_LOCAL_RUNNERS = 8;

export interface LocalStack {
  client: JobApiClient;
  server: RunningServer;
  /** The temp dir holding the server's state, runner slots and logs. */
  dir: string;
  logFile: string;
  /** Resolves once the controller runs: it starts after the server, while the caller may submit jobs already. */
  controllerUp: Promise<void>;
  close(): Promise<void>;
}

export interface LocalStackOptions {
  jobs: ParsedJob[];
  isolation: Isolation;
  /** Keep the temp dir (for debugging) instead of removing it. */
  keep?: boolean;
  /** Runners as child processes (`deltaci runner`, like `deltaci up`) instead of in this process. */
  runnerProcesses?: boolean;
  /** The in-process runners' oci factory (e.g. already being prepared by the isolation check); closed by `close()`. */
  crunFactory?: EarlyCrunFactory | undefined;
  /** Called as start-up and teardown steps end (`deltaci run --timings`). */
  mark?: (step: string) => void;
}

/** One pool whose runners can serve every selected job: their labels, and at least their limits. */
export function localPool(jobs: ParsedJob[], isolation: Isolation, workRoot: string): Pool {
  const host = hostPoolDefaults(workRoot);
  const labels = [...new Set(jobs.flatMap((j) => j.spec.runsOn.labels))];
  // os and arch are facts of this machine: a job asking for others is reported unschedulable.
  const { os, arch } = host;
  // A local run serves what the file asks: a limit above this machine's size is simply not binding.
  const resources = {
    cpus: Math.max(host.resources.cpus, ...jobs.map((j) => j.spec.limits.cpus)),
    memoryMiB: Math.max(host.resources.memoryMiB, ...jobs.map((j) => j.spec.limits.memoryMiB)),
    diskMiB: Math.max(host.resources.diskMiB, ...jobs.map((j) => j.spec.limits.diskMiB)),
  };
  const n = Math.min(MAX_LOCAL_RUNNERS, Math.max(1, jobs.length));
  return { name: "local", os, arch, labels, resources, max: n, minIdle: n, isolation };
}

/** The spec (image, limits, network, caches) most of `jobs` share. */
export function commonShape(jobs: ParsedJob[]): ParsedJob["spec"] {
  const counts = new Map<string, { n: number; spec: ParsedJob["spec"] }>();
  for (const { spec } of jobs) {
    const key = JSON.stringify([spec.image, spec.limits, spec.network, spec.caches]);
    const c = counts.get(key) ?? { n: 0, spec };
    c.n++;
    counts.set(key, c);
  }
  const first = jobs[0];
  if (!first) throw new Error("no jobs");
  return [...counts.values()].reduce((best, c) => (c.n > best.n ? c : best), { n: 0, spec: first.spec }).spec;
}

/**
 * Slots pick host uid ranges, cgroups and container names, so concurrent runs (and a `deltaci up`
 * on slots 0…) must not share them: each run takes MAX_LOCAL_RUNNERS slots derived from its pid, above 1024.
 */
export function runSlotBase(pid: number): number {
  return 1024 + (pid % 8000) * MAX_LOCAL_RUNNERS;
}

export async function startLocalStack(opts: LocalStackOptions): Promise<LocalStack> {
  const dir = await mkdtemp(join(tmpdir(), "deltaci-run-"));
  // Sandboxed steps run as an unprivileged uid that must traverse down to its slot's work dir.
  await chmod(dir, 0o711);
  await mkdir(join(dir, "runners"), { mode: 0o711 });
  const logFile = join(dir, "deltaci.log");
  const logger: Logger = pino({ level: "info" }, pino.destination({ dest: logFile, sync: true }));
  let server: RunningServer | null = null;
  let controller: RunningController | null = null;
  let client: JobApiClient | null = null;
  let sandboxFactory: SandboxFactory | null = null;
  let provider: InProcessProvider | null = null;
  const mark = opts.mark ?? (() => {});
  let controllerStarting: Promise<void> | null = null;
  let prewarming: Promise<void> = Promise.resolve();
  const close = async () => {
    await client?.close().catch(() => {});
    await controllerStarting?.catch(() => {}); // a controller still starting is stopped once it runs
    await prewarming; // a sandbox still being built is in the warm pool before the slots are reaped (long done after a job ran)
    const stopRunners = async () => {
      await controller?.stop({ runners: "terminate", timeoutMs: 15_000 }).catch((err: unknown) => logger.error({ err }, "controller stop failed"));
      if (!controller) await provider?.close().catch((err: unknown) => logger.error({ err }, "runner host close failed")); // the controller closes it
      await sandboxFactory?.close().catch((err: unknown) => logger.error({ err }, "sandbox factory close failed"));
      mark("runners stopped");
    };
    // The server closes while the runners stop: nothing reads its state after this, so a runner's
    // last request failing against it (a session stopped mid-job) loses nothing.
    const closeServer = async () => {
      await server?.close().catch((err: unknown) => logger.error({ err }, "server close failed"));
      mark("server closed");
    };
    await Promise.all([stopRunners(), closeServer()]);
    logger.flush();
    if (!opts.keep) await rm(dir, { recursive: true, force: true }).catch(() => {});
  };
  try {
    const workRoot = join(dir, "runners");
    const maxRunners = Math.min(MAX_LOCAL_RUNNERS, Math.max(1, opts.jobs.length));
    const slotBase = runSlotBase(process.pid);
    if (!opts.runnerProcesses) {
      const runnerLogger = logger.child({ component: "runner" });
      const sandboxLogger = { info: (f: Record<string, unknown>, m: string) => runnerLogger.info(f, m), warn: (f: Record<string, unknown>, m: string) => runnerLogger.warn(f, m) };
      opts.crunFactory?.log.attach(sandboxLogger);
      sandboxFactory = opts.isolation === "oci"
        ? requireCrunFactory(opts.crunFactory)
        : new ProcessSandboxFactory({ clock: systemClock, logger: sandboxLogger });
      // The jobs are known: the runners' sandboxes, of the jobs' most common shape, are built while
      // the server starts and the source is packed (when that shape can be built ahead: no egress, no caches).
      const shape = commonShape(opts.jobs);
      const prewarm = shape.network.egress === "none" && shape.caches.length === 0;
      if (prewarm) await rememberShape(join(workRoot, "warm-shape.json"), shape);
      provider = new InProcessProvider({
        // A slot per runner and one more (a runner's replacement starts while the slot it left is torn
        // down); each slot is reaped at start. Prewarming stops once every job is leased.
        workRoot, slotBase, maxSlots: Math.min(MAX_LOCAL_RUNNERS, maxRunners + 1), sandboxFactory, clock: systemClock,
        logger: runnerLogger, idleTimeoutMs: defaults.runnerIdleTimeoutMs, prewarm, prewarmJobs: opts.jobs.length,
      });
      prewarming = provider.prewarmFirst(maxRunners).then(() => mark("first sandboxes prewarmed")); // never rejects; the sessions take what it built
      await provider.init().catch(() => {});
    }
    // The state is thrown away at the end (and a crash leaves nothing worth keeping): no fsync. No
    // browser reaches this server (its token is never shown): no web view.
    server = await startServer({ host: "127.0.0.1", port: 0, dataDir: join(dir, "server"), logger: logger.child({ component: "server" }), durability: "none", web: false });
    mark("server up");
    const controllerOpts = {
      serverUrl: server.url, controllerToken: server.controllerToken, pools: [localPool(opts.jobs, opts.isolation, dir)],
      maxRunners, workRoot, metricsListen: null, runnerIdleTimeoutMs: defaults.runnerIdleTimeoutMs, idleGraceMs: 60_000, slotBase,
    };
    const controllerLogger = logger.child({ component: "controller" });
    const p = provider;
    controllerStarting = (async () => {
      controller = p
        ? await startController(controllerOpts, { provider: p, logger: controllerLogger, clock: systemClock })
        : await startLocalController({ ...controllerOpts, runnerMode: "process" }, controllerLogger);
      mark("controller up");
    })();
    controllerStarting.catch(() => {}); // the caller awaits `controllerUp`
    client = new JobApiClient({ server: server.url, token: server.apiToken, timeoutMs: defaults.requestTimeoutMs });
    const s = server;
    const c = client;
    return { client: c, server: s, dir, logFile, controllerUp: controllerStarting, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** In-process oci runners share the factory the isolation check prepared (it carries the run's image roots). */
function requireCrunFactory(early: EarlyCrunFactory | undefined): CrunSandboxFactory {
  if (!early) throw new DeltaError("E_SANDBOX", "in-process oci runners need the run's sandbox factory");
  return early.factory;
}
