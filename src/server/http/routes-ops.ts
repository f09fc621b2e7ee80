/** `/healthz` and `/metrics` (unauthenticated; they expose counts, never job data). */
import type { FastifyInstance } from "fastify";
import type { ServerMetrics } from "./metrics.ts";

export function opsRoutes(app: FastifyInstance, metrics: ServerMetrics, health: () => Promise<{ ok: boolean; schemaVersion: number; leaseWaiters: number; sweeper: boolean }>): void {
  app.get("/healthz", async (_req, reply) => {
    const h = await health();
    return reply.code(h.ok ? 200 : 503).send(h);
  });
  app.get("/metrics", async (_req, reply) => {
    return reply.code(200).header("content-type", metrics.registry.contentType).send(await metrics.registry.metrics());
  });
}
