/** Artifact create, resumable upload and direct-upload commit (`/v1/runner/artifacts`, lease token of the owning attempt only). */
import type { FastifyInstance } from "fastify";
import { DeltaError } from "../../base/errors.ts";
import { ArtifactCreateRequest } from "../../protocol/schemas.ts";
import type { BlobStore } from "../blobs/blob-store.ts";
import { commitDirectUpload, createArtifact, uploadChunk, uploadStatus, type UploadRange } from "../engine/artifact-ops.ts";
import type { EngineContext } from "../engine/context.ts";
import { leaseTokenHook } from "./routes-runner.ts";
import { IdParams, rawBody } from "./common.ts";

/** `bytes START-END/TOTAL` (END inclusive; TOTAL required for artifacts); none: the whole body. */
function parseUploadRange(h: string | undefined): UploadRange {
  if (h === undefined) return null;
  const m = /^bytes (\d{1,15})-(\d{1,15})\/(\d{1,15})$/.exec(h.trim());
  if (!m) throw new DeltaError("E_INVALID", "Content-Range must be `bytes START-END/TOTAL` (END inclusive)");
  const [start, end, total] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (end < start || end >= total) throw new DeltaError("E_INVALID", "Content-Range is not a range inside TOTAL");
  return { start, end, total };
}

export function artifactRoutes(app: FastifyInstance, ctx: EngineContext, blobs: BlobStore): void {
  const leaseAuth = leaseTokenHook(ctx);

  app.post<{ Body: ArtifactCreateRequest }>("/v1/runner/artifacts", { schema: { body: ArtifactCreateRequest }, onRequest: leaseAuth }, async (req, reply) => {
    return reply.code(201).send(await createArtifact(ctx, blobs, req.deltaTokenHash, req.body));
  });

  app.head<{ Params: { id: string } }>("/v1/runner/artifacts/:id/content", { schema: { params: IdParams }, onRequest: leaseAuth }, async (req, reply) => {
    const s = await uploadStatus(ctx, blobs, req.deltaTokenHash, req.params.id);
    return reply.code(s.committed ? 200 : 204).header("upload-offset", String(s.offset)).header("upload-length", String(s.size)).send();
  });

  app.get<{ Params: { id: string } }>("/v1/runner/artifacts/:id/content", { schema: { params: IdParams }, onRequest: leaseAuth }, async (req, reply) => {
    const s = await uploadStatus(ctx, blobs, req.deltaTokenHash, req.params.id);
    return reply.code(200).header("upload-offset", String(s.offset)).send({ committed: s.offset, size: s.size, complete: s.committed });
  });

  app.put<{ Params: { id: string } }>("/v1/runner/artifacts/:id/content", { schema: { params: IdParams }, onRequest: leaseAuth }, async (req, reply) => {
    const body = rawBody(req);
    const range = parseUploadRange(req.headers["content-range"]);
    const len = req.headers["content-length"] === undefined ? undefined : Number(req.headers["content-length"]);
    if (range && len !== undefined && len !== range.end - range.start + 1) throw new DeltaError("E_INVALID", "Content-Length differs from Content-Range");
    const r = await uploadChunk(ctx, blobs, req.deltaTokenHash, req.params.id, range, body, len);
    if (!r.done) return reply.code(202).header("upload-offset", String(r.committed)).send({ committed: r.committed });
    return reply.code(201).header("upload-offset", String(r.size)).send({ artifactId: r.artifactId, sha256: r.sha256, size: r.size });
  });

  app.post<{ Params: { id: string } }>("/v1/runner/artifacts/:id/commit", { schema: { params: IdParams }, onRequest: leaseAuth }, async (req, reply) => {
    const r = await commitDirectUpload(ctx, blobs, req.deltaTokenHash, req.params.id);
    return reply.code(201).send({ artifactId: r.artifactId, sha256: r.sha256, size: r.size });
  });
}
