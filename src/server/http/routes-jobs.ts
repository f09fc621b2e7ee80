/** Job API (API token): submit, list, status, log (follow), cancel, artifact download, source upload. */
import type { FastifyInstance } from "fastify";
import { Type } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { DeltaError } from "../../base/errors.ts";
import { artifactFileName } from "../../protocol/artifact-path.ts";
import { CancelJobRequest, SubmitJobRequest, type JobState } from "../../protocol/schemas.ts";
import type { BlobStore } from "../blobs/blob-store.ts";
import { findDownload } from "../engine/artifact-ops.ts";
import { refuseIfCollecting } from "../engine/collector.ts";
import type { EngineContext } from "../engine/context.ts";
import { cancelJob, jobStatus, submitJob } from "../engine/job-ops.ts";
import type { StaticToken } from "./auth.ts";
import { checkContentLength, clientGone, IdParams, queryInt, rawBody } from "./common.ts";
import { followLog, readLogStream } from "./log-stream.ts";
import type { TestReports } from "../reports/test-reports.ts";

const STATES: readonly JobState[] = ["queued", "leased", "running", "canceling", "succeeded", "failed", "errored", "canceled"];
export const ArtifactParams = Type.Object({ id: IdParams.properties.id, name: Type.String({ pattern: "^[A-Za-z0-9._-]{1,128}$" }) }, { additionalProperties: false });

/** `attachment` with an ASCII fallback name and the exact name in RFC 5987 form. */
function contentDisposition(name: string): string {
  const ascii = name.replace(/[^A-Za-z0-9._-]/g, "_");
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(name)}`;
}

export function jobRoutes(app: FastifyInstance, ctx: EngineContext, blobs: BlobStore, token: StaticToken, reports: TestReports): void {
  const onRequest = async (req: Parameters<StaticToken["check"]>[0]) => token.check(req);

  app.post<{ Body: SubmitJobRequest }>("/v1/jobs", { schema: { body: SubmitJobRequest }, onRequest }, async (req, reply) => {
    return reply.code(201).send(await submitJob(ctx, req.body, (sha) => blobs.has(sha)));
  });

  app.get<{ Querystring: Record<string, unknown> }>("/v1/jobs", { onRequest }, async (req, reply) => {
    const state = req.query.state;
    if (state !== undefined && !STATES.includes(state as JobState)) throw new DeltaError("E_INVALID", `state must be one of ${STATES.join(", ")}`);
    const limit = queryInt(req.query.limit, "limit", 100, 1000);
    const rows = await ctx.store.listJobs({ ...(state === undefined ? {} : { state: state as JobState }), limit });
    return reply.send({ jobs: await Promise.all(rows.map((j) => jobStatus(ctx, j.id))) });
  });

  app.get<{ Params: { id: string } }>("/v1/jobs/:id", { schema: { params: IdParams }, onRequest }, async (req, reply) => {
    const status = await jobStatus(ctx, req.params.id);
    const spec = (await ctx.store.getJob(req.params.id))?.spec;
    return reply.send({ ...status, testReports: spec ? await reports.forArtifacts(spec.artifacts, status.artifacts) : [] });
  });

  app.get<{ Params: { id: string }; Querystring: Record<string, unknown> }>("/v1/jobs/:id/log", { schema: { params: IdParams }, onRequest }, async (req, reply) => {
    const job = await ctx.store.getJob(req.params.id);
    if (!job) throw new DeltaError("E_NOT_FOUND", `no job ${req.params.id}`);
    const offset = queryInt(req.query.offset, "offset", 0);
    const attempt = queryInt(req.query.attempt, "attempt", job.attempt);
    const follow = req.query.follow === "1" || req.query.follow === "true";
    const a = await ctx.store.getAttempt(job.id, attempt);
    if (!a) throw new DeltaError("E_NOT_FOUND", `job ${job.id} has no attempt ${attempt}`);
    reply
      .header("content-type", "application/octet-stream")
      .header("x-content-type-options", "nosniff")
      .header("x-deltaci-attempt", String(attempt))
      .header("x-deltaci-log-bytes", String(a.logBytes))
      .header("x-deltaci-log-truncated", a.logTruncated ? "1" : "0");
    // A follow sends its headers at once: Node holds them until the first byte otherwise, and a
    // queued or silent job's follower then waited for them until its client's headers timeout.
    if (follow) reply.raw.once("pipe", () => reply.raw.flushHeaders());
    return reply.send(follow ? followLog(ctx, blobs, job.id, attempt, offset, clientGone(reply)) : readLogStream(ctx, blobs, job.id, attempt, offset));
  });

  app.post<{ Params: { id: string } }>("/v1/jobs/:id/cancel", { schema: { params: IdParams }, onRequest }, async (req, reply) => {
    const body = req.body ?? {};
    if (!Value.Check(CancelJobRequest, body)) throw new DeltaError("E_INVALID", "body must be {mode?: \"graceful\"|\"hard\"}");
    return reply.send(await cancelJob(ctx, req.params.id, body.mode ?? "graceful"));
  });

  app.get<{ Params: { id: string; name: string } }>("/v1/jobs/:id/artifacts/:name", { schema: { params: ArtifactParams }, onRequest }, async (req, reply) => {
    const art = await findDownload(ctx, req.params.id, req.params.name);
    return reply
      .header("content-type", "application/octet-stream")
      .header("content-disposition", contentDisposition(art.path === null ? art.name : artifactFileName(art.path)))
      .header("x-content-type-options", "nosniff")
      .header("content-security-policy", "default-src 'none'; sandbox")
      .header("content-length", String(art.size))
      .header("x-deltaci-sha256", art.sha256)
      .header("x-deltaci-media-type", art.mediaType)
      .send(await blobs.open(art.sha256));
  });

  app.post("/v1/sources", { onRequest }, async (req, reply) => {
    checkContentLength(req, ctx.opts.sourceMaxBytes);
    const stored = await blobs.put(rawBody(req), ctx.opts.sourceMaxBytes);
    await refuseIfCollecting(ctx, stored.sha256);
    return reply.code(201).send(stored);
  });
}
