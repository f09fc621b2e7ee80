/**
 * The reference control plane, embeddable: `startServer(opts)` opens the state store under
 * `dataDir`, starts the expiry sweeper and listens; `close()` answers held long polls, stops
 * the sweeper, closes the listener and the database.
 */
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { defaults } from "../config/defaults.ts";
import { projectRoot } from "../config/paths.ts";
import { openBlobStore } from "./blobs/open-blob-store.ts";
import type { EngineContext } from "./engine/context.ts";
import { loadCapacity } from "./engine/controller-ops.ts";
import { LeaseWaiters } from "./engine/lease-waiters.ts";
import { KnownTokens } from "./engine/known-tokens.ts";
import { LogDigests } from "./engine/log-digests.ts";
import { keys, Notifier } from "./engine/notifier.ts";
import { runCollector } from "./engine/collector.ts";
import { runLogArchiver } from "./engine/log-archive.ts";
import { leasesNeedGrace, runSweeper } from "./engine/sweeper.ts";
import { runReplicaSync } from "./engine/replica-sync.ts";
import type { FastifyInstance } from "fastify";
import { buildApp } from "./http/app.ts";
import { StaticToken } from "./http/auth.ts";
import { ServerMetrics } from "./http/metrics.ts";
import { artifactRoutes } from "./http/routes-artifacts.ts";
import { controllerRoutes } from "./http/routes-controller.ts";
import { jobRoutes } from "./http/routes-jobs.ts";
import { opsRoutes } from "./http/routes-ops.ts";
import { runnerRoutes } from "./http/routes-runner.ts";
import { sourceRoutes } from "./http/routes-sources.ts";
import { resolveOptions, type ServerOptions } from "./options.ts";
import { TestReports } from "./reports/test-reports.ts";
import { webRoutes } from "./web/web-routes.ts";
import { loadKeys, openSecretsAtRest } from "./secrets/secrets-at-rest.ts";
import { openStateStore, operatorToken, stateLocation } from "./open-state.ts";

export type { ServerOptions, Durability, BlobStoreOptions } from "./options.ts";
export { splitListen, resolveOptions, parseS3Url } from "./options.ts";

export interface RunningServer {
  /** Base URL, e.g. `http://127.0.0.1:8181`. */
  url: string;
  apiToken: string;
  controllerToken: string;
  /** Where generated tokens live (null when they were given). */
  apiTokenFile: string | null;
  controllerTokenFile: string | null;
  dataDir: string;
  /** Where the state is: the SQLite file, or the PostgreSQL database (without credentials). */
  stateLocation: string;
  /** Whether finished logs move to the blob store, and why (`--archive-logs`). */
  logArchive: string;
  close(): Promise<void>;
}

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const opts = resolveOptions({ ...options, dataDir: resolve(options.dataDir) });
  await mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  const shared = options.databaseUrl !== undefined;
  const api = await operatorToken(options.apiToken, opts.dataDir, "api-token", shared);
  const ctl = await operatorToken(options.controllerToken, opts.dataDir, "controller-token", shared);
  const blobs = await openBlobStore(options.blobStore ?? { kind: "fs" }, opts.dataDir, opts.durability);
  await blobs.init();

  const sealKeys = await loadKeys({
    path: options.secretsKeyFile ? resolve(options.secretsKeyFile) : join(opts.dataDir, "secrets-key"),
    explicit: options.secretsKeyFile !== undefined, rotate: options.rotateSecretsKey === true,
  });
  const store = await openStateStore(opts, options.databaseUrl, sealKeys.box);
  try {
    await openSecretsAtRest(store, sealKeys, opts.logger);
  } catch (err) {
    await store.close();
    throw err;
  }
  const waiters = new LeaseWaiters();
  const metrics = new ServerMetrics(store, waiters);
  const ctx: EngineContext = {
    store, clock: opts.clock, opts, events: new Notifier(), waiters, metrics, logger: opts.logger,
    capacity: { pools: [] }, demand: { version: opts.clock.now() }, uploadsInFlight: new Set(), logDigests: new LogDigests(), knownTokens: new KnownTokens(), lifecycle: { stopping: false }, roles: { sweeper: false },
    discardUpload: (id) => {
      blobs.discardUpload(id).catch((err: unknown) => opts.logger?.warn({ err, artifactId: id }, "could not remove an abandoned upload"));
    },
  };
  store.onHookError = (err) => opts.logger?.error({ err }, "after-commit hook failed");
  await loadCapacity(ctx);
  // Runners kept heartbeating while no server answered: give every live lease a fresh ttl before sweeping.
  if (await leasesNeedGrace(ctx)) await store.write((tx) => tx.extendLiveLeases(opts.clock.now() + opts.leaseTtlMs));

  const app = buildApp({ logger: opts.logger, jsonBodyLimitBytes: opts.jsonBodyLimitBytes, metrics });
  runnerRoutes(app, ctx, blobs);
  artifactRoutes(app, ctx, blobs);
  controllerRoutes(app, ctx, new StaticToken(ctl.token));
  const apiToken = new StaticToken(api.token);
  const reports = new TestReports(blobs, {
    maxBytes: defaults.testReportMaxBytes, cacheEntries: defaults.testReportCacheEntries, failedMax: defaults.testReportFailedMax,
    messageMaxChars: defaults.testReportMessageMaxChars, detailsMaxChars: defaults.testReportDetailsMaxChars,
  });
  jobRoutes(app, ctx, blobs, apiToken, reports);
  sourceRoutes(app, ctx, blobs, apiToken);
  if (options.web !== false) await webRoutes(app, ctx, blobs, apiToken, { assetsDir: join(projectRoot(), "dist", "web"), reports });
  opsRoutes(app, metrics, async () => ({
    ok: !ctx.lifecycle.stopping, schemaVersion: await store.schemaVersion(), leaseWaiters: waiters.size, sweeper: ctx.roles.sweeper,
  }));

  const sweeperStop = new AbortController();
  let closing: Promise<void> | null = null;
  const close = () => {
    closing ??= (async () => {
      ctx.lifecycle.stopping = true;
      sweeperStop.abort();
      waiters.drain();
      ctx.events.emit(keys.shutdown);
      await sweeping;
      await collecting;
      await archiving;
      await syncing;
      await closeListener(app);
      await store.close();
      await blobs.close();
    })();
    return closing;
  };
  let sweeping: Promise<void> = Promise.resolve();
  let syncing: Promise<void> = Promise.resolve();
  let collecting: Promise<void> = Promise.resolve();
  let archiving: Promise<void> = Promise.resolve();
  try {
    await app.listen({ host: opts.host, port: opts.port });
  } catch (err) {
    await store.close();
    throw err;
  }
  sweeping = runSweeper(ctx, sweeperStop.signal);
  collecting = runCollector(ctx, blobs, sweeperStop.signal);
  const logArchive = logArchiveMode(options.archiveLogs, store.shared, blobs.kind);
  if (logArchive.startsWith("on")) archiving = runLogArchiver(ctx, blobs, sweeperStop.signal);
  else opts.logger?.info({ logArchive }, "finished logs stay in the state store");
  syncing = runReplicaSync(ctx, sweeperStop.signal).catch((err: unknown) => opts.logger?.error({ err }, "replica sync stopped"));
  const addr = app.server.address();
  const port = typeof addr === "object" && addr ? addr.port : opts.port;
  const host = opts.host.includes(":") ? `[${opts.host}]` : opts.host;
  return {
    url: `http://${host === "0.0.0.0" ? "127.0.0.1" : host}:${port}`,
    apiToken: api.token, controllerToken: ctl.token, apiTokenFile: api.path, controllerTokenFile: ctl.path,
    dataDir: opts.dataDir, stateLocation: stateLocation(opts.dataDir, options.databaseUrl), logArchive, close,
  };
}

/**
 * Whether finished logs move to the blob store: as asked, else yes unless the state is shared and
 * the blobs are on this replica's own disk (the other replicas could not read them).
 */
export function logArchiveMode(asked: boolean | undefined, sharedState: boolean, blobKind: string): string {
  if (asked !== undefined) return asked ? "on (--archive-logs on)" : "off (--archive-logs off)";
  if (sharedState && blobKind === "fs") return "off: replicas would not share a filesystem blob store (use --blob-store s3://…, or --archive-logs on for one replica or a shared data dir)";
  return "on";
}

/**
 * Closes the listener: idle keep-alive connections at once, and each one whose response ends
 * meanwhile as soon as it is idle (else the close waited for its client to close it: `deltaci
 * run`'s controller's long poll, released by the drain, held it 20–140 ms, until the controller
 * had stopped its runners); responses in flight after `serverCloseGraceMs` (a client that stopped
 * reading a download would otherwise hold the close until its socket timed out).
 */
async function closeListener(app: FastifyInstance): Promise<void> {
  const timer = setTimeout(() => app.server.closeAllConnections(), defaults.serverCloseGraceMs);
  const onResponseEnd = (msg: unknown) => {
    if ((msg as { server?: unknown }).server === app.server) setImmediate(() => app.server.closeIdleConnections());
  };
  subscribe(RESPONSE_FINISH_CHANNEL, onResponseEnd);
  try {
    await app.close();
  } finally {
    unsubscribe(RESPONSE_FINISH_CHANNEL, onResponseEnd);
    clearTimeout(timer);
  }
}

/** node's http server publishes `{ request, response, socket, server }` here as a response ends. */
const RESPONSE_FINISH_CHANNEL = "http.server.response.finish";
