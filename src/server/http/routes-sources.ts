/**
 * Declared source-archive uploads (API token): `POST /v1/sources/uploads {sha256, size}` answers
 * nothing to send when the store holds that archive, a direct (presigned) upload and its commit
 * URL on an object store, or `POST /v1/sources` (through the server) on the filesystem store.
 * The upload id is derived from the content, so concurrent uploads of one archive share it.
 */
import type { FastifyInstance } from "fastify";
import { Type } from "@sinclair/typebox";
import { DeltaError } from "../../base/errors.ts";
import { SourceUploadRequest, type ArtifactUpload, type SourceUploadPlan } from "../../protocol/schemas.ts";
import type { BlobStore } from "../blobs/blob-store.ts";
import { refuseIfCollecting } from "../engine/collector.ts";
import type { EngineContext } from "../engine/context.ts";
import type { StaticToken } from "./auth.ts";

export const UploadParams = Type.Object({ id: Type.String({ pattern: "^src-[a-f0-9]{64}-[0-9]{1,15}$" }) }, { additionalProperties: false });

const uploadIdOf = (sha256: string, size: number) => `src-${sha256}-${size}`;

export function sourceRoutes(app: FastifyInstance, ctx: EngineContext, blobs: BlobStore, token: StaticToken): void {
  const onRequest = async (req: Parameters<StaticToken["check"]>[0]) => token.check(req);

  app.post<{ Body: SourceUploadRequest }>("/v1/sources/uploads", { schema: { body: SourceUploadRequest }, onRequest }, async (req, reply) => {
    const { sha256, size } = req.body;
    if (size > ctx.opts.sourceMaxBytes) throw new DeltaError("E_TOO_LARGE", `source archive exceeds ${ctx.opts.sourceMaxBytes} bytes`);
    let upload: ArtifactUpload | null = null;
    if (!(await blobs.has(sha256, size))) {
      const id = uploadIdOf(sha256, size);
      const direct = await blobs.directUpload(id, size);
      const commitUrl = `/v1/sources/uploads/${id}/commit`;
      if (direct === null) upload = { url: "/v1/sources", method: "POST", headers: { "content-type": "application/octet-stream", "content-length": String(size) } };
      else if (direct.parts === null) upload = { url: direct.url, method: "PUT", headers: direct.headers, commitUrl };
      else upload = { url: commitUrl, method: "POST", headers: {}, commitUrl, parts: direct.parts };
    }
    const out: SourceUploadPlan = { sha256, size, upload };
    return reply.code(201).send(out);
  });

  app.post<{ Params: { id: string } }>("/v1/sources/uploads/:id/commit", { schema: { params: UploadParams }, onRequest }, async (req, reply) => {
    const [, sha256 = "", size = "0"] = req.params.id.split("-");
    const expect = { sha256, size: Number(size) };
    if (!(await blobs.has(expect.sha256, expect.size))) await blobs.finishUpload(req.params.id, expect);
    await refuseIfCollecting(ctx, expect.sha256);
    return reply.code(201).send(expect);
  });
}
