/**
 * The web view's data, under `/web/api`, signed in by the session cookie (sessions.ts) instead
 * of a bearer token: job list and job pages with live pushes, the log as a byte stream from an
 * offset, raw log and artifact downloads (always attachments), cancel (CSRF-checked), fleet.
 * Everything is read through the same engine operations as the job API.
 */
import type { FastifyInstance, FastifyReply } from "fastify";
import { Type } from "@sinclair/typebox";
import { defaults } from "../../config/defaults.ts";
import { DeltaError } from "../../base/errors.ts";
import type { JobState } from "../../protocol/schemas.ts";
import type { BlobStore } from "../blobs/blob-store.ts";
import { findDownload } from "../engine/artifact-ops.ts";
import type { EngineContext } from "../engine/context.ts";
import { cancelJob, jobStatus } from "../engine/job-ops.ts";
import { keys } from "../engine/notifier.ts";
import type { JobListFilter } from "../engine/state-store.ts";
import type { JobRow } from "../engine/types.ts";
import { clientGone, IdParams, queryInt } from "../http/common.ts";
import { followLog, readLogStream } from "../http/log-stream.ts";
import type { TestReports } from "../reports/test-reports.ts";
import { FLEET_SAMPLED, fleetSnapshot, type FleetHistory } from "./fleet.ts";
import { pushStream } from "./push.ts";
import { requireCsrf, requireSession, type WebSessions } from "./sessions.ts";

const STATES: readonly JobState[] = ["queued", "leased", "running", "canceling", "succeeded", "failed", "errored", "canceled"];
const PAGE_DEFAULT = 25;
const PAGE_MAX = 200;
const ArtifactParams = Type.Object({ id: IdParams.properties.id, name: Type.String({ pattern: "^[A-Za-z0-9._-]{1,128}$" }) }, { additionalProperties: false });
const CancelBody = Type.Object({ mode: Type.Union([Type.Literal("graceful"), Type.Literal("hard")]) }, { additionalProperties: false });

type Query = Record<string, unknown>;

function str(v: unknown, name: string, max: number): string | undefined {
  if (v === undefined || v === "") return undefined;
  if (typeof v !== "string" || v.length > max) throw new DeltaError("E_INVALID", `query parameter ${name} must be a string of at most ${max} characters`);
  return v;
}

/** The list filter from a query string (state, name substring, label, before=seq cursor). */
export function listFilter(q: Query): JobListFilter {
  const state = str(q.state, "state", 16);
  if (state !== undefined && !STATES.includes(state as JobState)) throw new DeltaError("E_INVALID", `state must be one of ${STATES.join(", ")}`);
  const name = str(q.name, "name", 128);
  const label = str(q.label, "label", 128);
  const before = q.before === undefined || q.before === "" ? undefined : queryInt(q.before, "before", 0);
  return {
    ...(state === undefined ? {} : { state: state as JobState }), ...(name === undefined ? {} : { name }),
    ...(label === undefined ? {} : { label }), ...(before === undefined ? {} : { beforeSeq: before }),
    limit: queryInt(q.limit, "limit", PAGE_DEFAULT, PAGE_MAX),
  };
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

async function summary(ctx: EngineContext, j: JobRow) {
  const a = j.attempt > 0 ? await ctx.store.getAttempt(j.id, j.attempt) : undefined;
  return {
    jobId: j.id, seq: j.seq, name: j.name, state: j.state, labels: j.spec.runsOn.labels, attempt: j.attempt,
    runnerId: a?.runnerId ?? null, createdAt: iso(j.createdAt), finishedAt: iso(j.finishedAt),
    unschedulable: j.state === "queued" ? j.unschedulable : null, failure: j.failure,
  };
}

export async function jobPage(ctx: EngineContext, f: JobListFilter) {
  const rows = await ctx.store.listJobs({ ...f, limit: f.limit + 1 });
  const more = rows.length > f.limit;
  const page = rows.slice(0, f.limit);
  return { jobs: await Promise.all(page.map((j) => summary(ctx, j))), next: more ? (page[page.length - 1]?.seq ?? null) : null };
}

/** The job API's status plus a summary of the spec (never env or secrets). */
export async function jobDetail(ctx: EngineContext, jobId: string) {
  const status = await jobStatus(ctx, jobId);
  const job = await ctx.store.getJob(jobId);
  if (!job) throw new DeltaError("E_NOT_FOUND", `no job ${jobId}`);
  const s = job.spec;
  return {
    ...status, attempt: job.attempt, cancelMode: job.cancelMode,
    spec: {
      image: s.image, runsOn: s.runsOn, limits: s.limits, network: s.network, source: s.source,
      steps: s.steps.map((st) => st.name), artifacts: s.artifacts.map((a) => a.name),
      reports: s.artifacts.filter((a) => a.report !== undefined).map((a) => a.name),
    },
  };
}

function download(reply: FastifyReply, name: string, size: number | null): FastifyReply {
  reply
    .header("content-type", "application/octet-stream")
    .header("content-disposition", `attachment; filename="${name}"`)
    .header("content-security-policy", "default-src 'none'; sandbox")
    .header("cache-control", "no-store");
  if (size !== null) reply.header("content-length", String(size));
  return reply;
}

export function webApiRoutes(app: FastifyInstance, ctx: EngineContext, blobs: BlobStore, sessions: WebSessions, fleet: FleetHistory, reports: TestReports): void {
  const push = { debounceMs: defaults.webPushDebounceMs, keepAliveMs: defaults.webPushKeepAliveMs };
  const sse = (reply: FastifyReply) => reply.header("content-type", "text/event-stream; charset=utf-8").header("cache-control", "no-store").header("x-accel-buffering", "no");

  void app.register(async (api) => {
    api.addHook("onRequest", async (req, reply) => {
      reply.header("cache-control", "no-store");
      requireSession(sessions, req);
    });

    api.get("/session", async (req) => ({ csrf: requireSession(sessions, req).csrf }));

    api.get<{ Querystring: Query }>("/jobs", async (req) => jobPage(ctx, listFilter(req.query)));

    api.get<{ Querystring: Query }>("/jobs/events", async (req, reply) => {
      const f = listFilter(req.query);
      return sse(reply).send(pushStream(ctx, { event: "jobs", wakeKeys: [keys.demand], snapshot: async () => JSON.stringify(await jobPage(ctx, f)), ...push }, clientGone(reply)));
    });

    api.get<{ Params: { id: string } }>("/jobs/:id", { schema: { params: IdParams } }, async (req) => jobDetail(ctx, req.params.id));

    api.get<{ Params: { id: string } }>("/jobs/:id/events", { schema: { params: IdParams } }, async (req, reply) => {
      const id = req.params.id;
      await jobDetail(ctx, id);
      const snapshot = async () => ((await ctx.store.getJob(id)) ? JSON.stringify(await jobDetail(ctx, id)) : null);
      return sse(reply).send(pushStream(ctx, { event: "job", wakeKeys: [keys.job(id)], snapshot, ...push }, clientGone(reply)));
    });

    api.get<{ Params: { id: string }; Querystring: Query }>("/jobs/:id/log", { schema: { params: IdParams } }, async (req, reply) => {
      const job = await ctx.store.getJob(req.params.id);
      if (!job) throw new DeltaError("E_NOT_FOUND", `no job ${req.params.id}`);
      const attempt = queryInt(req.query.attempt, "attempt", job.attempt);
      const offset = queryInt(req.query.offset, "offset", 0);
      const a = await ctx.store.getAttempt(job.id, attempt);
      if (!a) throw new DeltaError("E_NOT_FOUND", `job ${job.id} has no attempt ${attempt}`);
      reply.header("x-deltaci-attempt", String(attempt)).header("x-deltaci-log-bytes", String(a.logBytes));
      if (req.query.download === "1") {
        return download(reply, `${job.name}-${job.id}-attempt-${attempt}.log`, null).send(readLogStream(ctx, blobs, job.id, attempt, 0));
      }
      reply.header("content-type", "application/octet-stream");
      const follow = req.query.follow === "1";
      return reply.send(follow ? followLog(ctx, blobs, job.id, attempt, offset, clientGone(reply)) : readLogStream(ctx, blobs, job.id, attempt, offset));
    });

    api.get<{ Params: { id: string; name: string } }>("/jobs/:id/artifacts/:name", { schema: { params: ArtifactParams } }, async (req, reply) => {
      const art = await findDownload(ctx, req.params.id, req.params.name);
      return download(reply, art.name, art.size).header("x-deltaci-sha256", art.sha256).send(await blobs.open(art.sha256));
    });

    // Parsed on request (cached by digest), not in the pushed snapshot: the page asks when a report artifact appears.
    api.get<{ Params: { id: string } }>("/jobs/:id/test-reports", { schema: { params: IdParams } }, async (req) => {
      const job = await ctx.store.getJob(req.params.id);
      if (!job) throw new DeltaError("E_NOT_FOUND", `no job ${req.params.id}`);
      return { testReports: await reports.forArtifacts(job.spec.artifacts, (await jobStatus(ctx, job.id)).artifacts) };
    });

    api.post<{ Params: { id: string }; Body: { mode: "graceful" | "hard" } }>("/jobs/:id/cancel", { schema: { params: IdParams, body: CancelBody } }, async (req) => {
      requireCsrf(requireSession(sessions, req), req);
      return cancelJob(ctx, req.params.id, req.body.mode);
    });

    api.get("/fleet", async () => fleetSnapshot(ctx, fleet));
    api.get("/fleet/events", async (_req, reply) => {
      return sse(reply).send(pushStream(ctx, { event: "fleet", wakeKeys: [keys.demand, FLEET_SAMPLED], snapshot: async () => JSON.stringify(await fleetSnapshot(ctx, fleet)), ...push }, clientGone(reply)));
    });
  }, { prefix: "/web/api" });
}

/** What the pages receive (src/web imports these types). */
export type JobSummary = Awaited<ReturnType<typeof summary>>;
export type JobPage = Awaited<ReturnType<typeof jobPage>>;
export type JobDetail = Awaited<ReturnType<typeof jobDetail>>;
