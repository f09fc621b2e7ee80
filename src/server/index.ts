/**
 * The reference control plane, embeddable: `startServer(opts)` opens the state store under
 * `dataDir`, starts the expiry sweeper and listens; `close()` answers held long polls, stops
 * the sweeper, closes the listener and the database.
 */
import { mkdir, open } from "node:fs/promises";
import { join, resolve } from "node:path";
import { ContentStore } from "./blobs/cas.ts";
import { SqliteStateStore } from "./db/sqlite-state-store.ts";
import type { EngineContext } from "./engine/context.ts";
import { loadCapacity } from "./engine/controller-ops.ts";
import { LeaseWaiters } from "./engine/lease-waiters.ts";
import { LogDigests } from "./engine/log-digests.ts";
import { keys, Notifier } from "./engine/notifier.ts";
import { runSweeper } from "./engine/sweeper.ts";
import { buildApp } from "./http/app.ts";
import { StaticToken } from "./http/auth.ts";
import { ServerMetrics } from "./http/metrics.ts";
import { artifactRoutes } from "./http/routes-artifacts.ts";
import { controllerRoutes } from "./http/routes-controller.ts";
import { jobRoutes } from "./http/routes-jobs.ts";
import { opsRoutes } from "./http/routes-ops.ts";
import { runnerRoutes } from "./http/routes-runner.ts";
import { resolveOptions, type ServerOptions } from "./options.ts";
import { loadOrCreateToken } from "./tokens.ts";

export type { ServerOptions, Durability } from "./options.ts";
export { splitListen, resolveOptions } from "./options.ts";

export interface RunningServer {
  /** Base URL, e.g. `http://127.0.0.1:8181`. */
  url: string;
  apiToken: string;
  controllerToken: string;
  /** Where generated tokens live (null when they were given). */
  apiTokenFile: string | null;
  controllerTokenFile: string | null;
  dataDir: string;
  close(): Promise<void>;
}

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const opts = resolveOptions({ ...options, dataDir: resolve(options.dataDir) });
  await mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  const api = options.apiToken ? { token: options.apiToken, path: null } : await loadOrCreateToken(opts.dataDir, "api-token", "api");
  const ctl = options.controllerToken ? { token: options.controllerToken, path: null } : await loadOrCreateToken(opts.dataDir, "controller-token", "controller");
  const blobs = new ContentStore(opts.dataDir);
  await blobs.init();

  // The state holds job secrets: create it owner-only (SQLite gives -wal/-shm the same mode).
  await (await open(join(opts.dataDir, "state.db"), "a", 0o600)).close();
  const store = new SqliteStateStore(join(opts.dataDir, "state.db"), opts.durability);
  const waiters = new LeaseWaiters();
  const metrics = new ServerMetrics(store, waiters);
  const ctx: EngineContext = {
    store, clock: opts.clock, opts, events: new Notifier(), waiters, metrics, logger: opts.logger,
    capacity: { pools: [] }, demand: { version: opts.clock.now() }, uploadsInFlight: new Set(), logDigests: new LogDigests(), lifecycle: { stopping: false },
    discardUpload: (id) => {
      blobs.discardUpload(id).catch((err: unknown) => opts.logger?.warn({ err, artifactId: id }, "could not remove an abandoned upload"));
    },
  };
  store.onHookError = (err) => opts.logger?.error({ err }, "after-commit hook failed");
  loadCapacity(ctx);
  // Runners kept heartbeating while we were down: give every live lease a fresh ttl before sweeping.
  await store.write(() => store.extendLiveLeases(opts.clock.now() + opts.leaseTtlMs));

  const app = buildApp({ logger: opts.logger, jsonBodyLimitBytes: opts.jsonBodyLimitBytes, metrics });
  runnerRoutes(app, ctx, blobs);
  artifactRoutes(app, ctx, blobs);
  controllerRoutes(app, ctx, new StaticToken(ctl.token));
  jobRoutes(app, ctx, blobs, new StaticToken(api.token));
  opsRoutes(app, metrics, () => ({ ok: !ctx.lifecycle.stopping, schemaVersion: store.schemaVersion(), leaseWaiters: waiters.size }));

  const sweeperStop = new AbortController();
  let closing: Promise<void> | null = null;
  const close = () => {
    closing ??= (async () => {
      ctx.lifecycle.stopping = true;
      sweeperStop.abort();
      waiters.drain();
      ctx.events.emit(keys.shutdown);
      await sweeping;
      await app.close();
      store.close();
    })();
    return closing;
  };
  let sweeping: Promise<void> = Promise.resolve();
  try {
    await app.listen({ host: opts.host, port: opts.port });
  } catch (err) {
    store.close();
    throw err;
  }
  sweeping = runSweeper(ctx, sweeperStop.signal);
  const addr = app.server.address();
  const port = typeof addr === "object" && addr ? addr.port : opts.port;
  const host = opts.host.includes(":") ? `[${opts.host}]` : opts.host;
  return {
    url: `http://${host === "0.0.0.0" ? "127.0.0.1" : host}:${port}`,
    apiToken: api.token, controllerToken: ctl.token, apiTokenFile: api.path, controllerTokenFile: ctl.path,
    dataDir: opts.dataDir, close,
  };
}
