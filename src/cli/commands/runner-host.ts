/**
 * `deltaci runner-host`: the composition root of a runner host process (src/host/runner-host.ts).
 * A controller starts it with `--runner-mode session` and talks to it over `--socket` (the
 * runner-host channel, src/protocol/host-protocol.ts). It serves sessions until it is retired
 * (by the controller, by SIGTERM, or at --max-sessions / --max-age), then exits once its busy
 * sessions ended. A host left without a controller and without sessions exits after
 * --runner-idle-timeout. `kill -9` of a host at any time costs only retries: its leases expire.
 */
import { chmod, rm } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import type { Command } from "commander";
import { Value } from "@sinclair/typebox/value";
import { pino } from "pino";
import { systemClock } from "../../base/clock.ts";
import { isDeltaError } from "../../base/errors.ts";
import { DELTACI_VERSION, defaults } from "../../config/defaults.ts";
import { hostConfig, type HostConfig, type HostFlags } from "../../config/host-config.ts";
import { defaultRunnerSettings } from "../../config/runner-config.ts";
import { RunnerHost } from "../../host/runner-host.ts";
import { HostCommand, type HostEvent } from "../../protocol/host-protocol.ts";
import { readJsonLines, writeJsonLine } from "../../protocol/json-lines.ts";
import { slotInfo } from "../../sandbox/slots.ts";
import { runnerSandboxFactory } from "./runner.ts";

export function registerRunnerHostCommand(program: Command): void {
  program
    .command("runner-host")
    .description("serve runner sessions in one warm process (started by `deltaci controller --runner-mode session`)")
    .requiredOption("--socket <path>", "unix socket the controller connects to (created 0600)")
    .requiredOption("--work-root <dir>", "parent of the slots' work dirs (shared caches live here)")
    .requiredOption("--slot-base <n>", "first slot index of this host")
    .requiredOption("--slots <n>", "number of slots (most sessions at once)")
    .requiredOption("--host-id <id>", "this host's name")
    .option("--isolation <oci|process>", "sandbox backend (process: no isolation, development only)", "oci")
    .option("--max-sessions <n>", `retire after this many sessions (0: never; default ${defaults.hostMaxSessions})`)
    .option("--max-age <duration>", "retire after this long (default 1h)")
    .option("--runner-idle-timeout <duration>", "a session ends when no job came for this long (default 5m)")
    .option("--no-prewarm", "do not build the next sandbox of a slot ahead of its job")
    .option("--image-roots <dirs>", "dirs below which jobs may name local OCI images (env DELTACI_IMAGE_ROOTS)")
    .option("--insecure-registries <list>", "host[:port],... pulled without TLS verification")
    .option("--log-level <level>", "error|warn|info|debug|silent")
    .action(async (flags: HostFlags) => {
      process.exit(await hostMain(hostConfig(flags)));
    });
}

async function hostMain(cfg: HostConfig): Promise<number> {
  const logger = pino({ level: cfg.logLevel, base: { component: "runner-host", host: cfg.hostId } }, pino.destination(2));
  const sandboxFactory = runnerSandboxFactory({ isolation: cfg.isolation, insecureRegistries: cfg.insecureRegistries, imageRoots: cfg.imageRoots }, logger, { spareDisks: true });
  const slots = Array.from({ length: cfg.slots }, (_, i) => slotInfo(cfg.slotBase + i, cfg.workRoot));
  const base = defaultRunnerSettings("http://unused", { labels: [], cacheDir: cfg.workRoot, idleTimeoutMs: cfg.runnerIdleTimeoutMs, prewarm: cfg.prewarm });
  const { serverUrl: _url, labels: _labels, ...settings } = base;
  const host = new RunnerHost({ slots, sandboxFactory, settings: { ...settings, version: DELTACI_VERSION }, clock: systemClock, logger, maxSessions: cfg.maxSessions, maxAgeMs: cfg.maxAgeMs });
  const reaped = await host.init();
  if (reaped.length > 0) logger.warn({ reaped }, "reaped what an earlier host left in these slots");

  const conn: { controller: Socket | null } = { controller: null };
  const send = (e: HostEvent) => {
    if (conn.controller) writeJsonLine(conn.controller, e);
  };
  host.onEvent(send);
  const hello = (): HostEvent => {
    const st = host.stats();
    return { type: "hello", hostId: cfg.hostId, pid: process.pid, served: st.served, ageMs: st.ageMs, retiring: st.retiring, sessions: host.list() };
  };
  const handle = (value: unknown) => {
    if (!Value.Check(HostCommand, value)) {
      send({ type: "refused", id: null, code: "E_INVALID", message: "not a runner-host command" });
      return;
    }
    const cmd = value;
    try {
      switch (cmd.op) {
        case "launch": host.launch({ id: cmd.id, registrationToken: cmd.registrationToken, serverUrl: cmd.serverUrl, labels: cmd.labels }); break;
        case "drain": host.drain(cmd.id); break;
        case "terminate": void host.terminate(cmd.id); break;
        case "retire": host.retire(); break;
      }
    } catch (err) {
      send({ type: "refused", id: "id" in cmd ? cmd.id : null, code: isDeltaError(err) ? err.code : "E_INTERNAL", message: (err as Error).message });
    }
  };
  // The newest connection is the controller: a restarted one takes over from a dead one.
  const server = createServer((sock) => {
    conn.controller?.destroy();
    conn.controller = sock;
    sock.on("error", () => {});
    sock.on("close", () => {
      if (conn.controller === sock) conn.controller = null;
    });
    readJsonLines(sock, handle);
    writeJsonLine(sock, hello());
  });
  await rm(cfg.socket, { force: true });
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(cfg.socket, () => resolve()));
  await chmod(cfg.socket, 0o600);
  logger.info({ socket: cfg.socket, slots: `${cfg.slotBase}..${cfg.slotBase + cfg.slots - 1}`, isolation: cfg.isolation, pid: process.pid }, "runner host ready");

  const onSignal = (sig: string) => {
    logger.warn({ signal: sig }, "retiring on signal");
    host.retire();
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  // Orphaned (no controller) and empty for the idle timeout: nobody will use this host again.
  const orphanCheck = setInterval(() => {
    if (conn.controller === null && host.stats().sessions === 0 && host.stats().ageMs > cfg.runnerIdleTimeoutMs) host.retire();
  }, Math.min(cfg.runnerIdleTimeoutMs, 10_000));
  await host.drained;
  clearInterval(orphanCheck);
  logger.info(host.stats(), "runner host drained: exiting");
  await host.close();
  await sandboxFactory.close().catch((err: unknown) => logger.error({ err: String(err) }, "closing the sandbox factory failed"));
  conn.controller?.end();
  server.close();
  await rm(cfg.socket, { force: true });
  return 0;
}
