/**
 * The web view on the API's listener: the page routes (`/login`, `/`, `/jobs/:jobId`, `/fleet`)
 * answer one HTML shell, the bundled assets are served with a long immutable cache, sign-in
 * trades the API token for a session cookie, and `/web/api` (web-api.ts) serves the data.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { Type } from "@sinclair/typebox";
import { DeltaError } from "../../base/errors.ts";
import { defaults } from "../../config/defaults.ts";
import type { BlobStore } from "../blobs/blob-store.ts";
import type { EngineContext } from "../engine/context.ts";
import type { StaticToken } from "../http/auth.ts";
import { ASSET_PREFIX, loadWebAssets, SECURITY_HEADERS } from "./assets.ts";
import { FleetHistory, runFleetSampler } from "./fleet.ts";
import {
  clearSessionCookie, requireCsrf, requireSameOrigin, requireSession, sessionCookie, setSessionCookie, WebSessions,
} from "./sessions.ts";
import { webApiRoutes } from "./web-api.ts";
import type { TestReports } from "../reports/test-reports.ts";

export interface WebOptions {
  /** Where the built assets are (dist/web). */
  assetsDir: string;
  reports: TestReports;
}

const SignInBody = Type.Object({ token: Type.String({ minLength: 1, maxLength: 512 }) }, { additionalProperties: false });
const PAGES = ["/", "/fleet", "/jobs/:jobId"] as const;

export async function webRoutes(app: FastifyInstance, ctx: EngineContext, blobs: BlobStore, apiToken: StaticToken, o: WebOptions): Promise<void> {
  const assets = await loadWebAssets(o.assetsDir);
  if (assets.problem) ctx.logger?.warn(assets.problem);
  const sessions = new WebSessions(ctx.clock, defaults.webSessionTtlMs, defaults.webSessionsMax);
  const fleet = new FleetHistory(defaults.webFleetSamples);
  const stopSampler = new AbortController();
  let sampling: Promise<void> = Promise.resolve();
  app.addHook("onListen", async () => {
    sampling = runFleetSampler(ctx, fleet, defaults.webFleetSampleMs, ctx.clock, stopSampler.signal);
  });
  app.addHook("onClose", async () => {
    stopSampler.abort();
    await sampling;
  });

  const shell = (reply: FastifyReply) => {
    if (!assets.shell) return reply.code(503).type("text/plain; charset=utf-8").send(assets.problem ?? "web view unavailable");
    return reply.type("text/html; charset=utf-8").header("cache-control", "no-store").send(assets.shell);
  };
  const signedIn = (req: FastifyRequest) => {
    const id = sessionCookie(req);
    return id !== null && sessions.get(id) !== null;
  };

  // One encapsulated scope: its hook gives every web response (pages, assets, data, errors) the security headers.
  await app.register(async (web) => {
    web.addHook("onRequest", async (_req, reply) => {
      reply.headers(SECURITY_HEADERS);
    });
    routes(web);
  });

  function routes(app: FastifyInstance): void {
    app.get("/login", async (_req, reply) => shell(reply));
    for (const path of PAGES) {
      app.get(path, async (req, reply) => (signedIn(req) ? shell(reply) : reply.code(303).header("location", "/login").send()));
    }

    app.get<{ Params: { file: string } }>(`${ASSET_PREFIX}:file`, async (req, reply) => {
      const a = assets.files.get(req.params.file);
      if (!a) throw new DeltaError("E_NOT_FOUND", "no such asset");
      return reply.type(a.contentType).header("cache-control", "public, max-age=31536000, immutable").send(a.body);
    });

    // Sign-in: JSON only (a cross-site form cannot send it without a CORS preflight we never answer).
    app.post<{ Body: { token: string } }>("/web/session", { schema: { body: SignInBody } }, async (req, reply) => {
      requireSameOrigin(req);
      if (!apiToken.matches(req.body.token)) throw new DeltaError("E_TOKEN_INVALID", "that is not this server's API token");
      const { id, session } = sessions.create();
      setSessionCookie(reply, req, id, defaults.webSessionTtlMs);
      return reply.header("cache-control", "no-store").send({ csrf: session.csrf });
    });

    app.post("/web/session/end", async (req, reply) => {
      requireCsrf(requireSession(sessions, req), req);
      const id = sessionCookie(req);
      if (id !== null) sessions.end(id);
      clearSessionCookie(reply);
      return reply.code(204).send();
    });

    webApiRoutes(app, ctx, blobs, sessions, fleet, o.reports);
  }
}
