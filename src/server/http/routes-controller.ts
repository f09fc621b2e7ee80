/** `/v1/controller/*` (controller token): registration tokens, demand long poll, declared capacity. */
import type { FastifyInstance } from "fastify";
import { CapacityRequest, RegistrationsRequest } from "../../protocol/schemas.ts";
import type { EngineContext } from "../engine/context.ts";
import { createRegistrations, setCapacity, waitDemand } from "../engine/controller-ops.ts";
import type { StaticToken } from "./auth.ts";
import { clientGone, queryInt } from "./common.ts";

export function controllerRoutes(app: FastifyInstance, ctx: EngineContext, token: StaticToken): void {
  const onRequest = async (req: Parameters<StaticToken["check"]>[0]) => token.check(req);

  app.post<{ Body: RegistrationsRequest }>("/v1/controller/registrations", { schema: { body: RegistrationsRequest }, onRequest }, async (req, reply) => {
    return reply.code(201).send(await createRegistrations(ctx, req.body));
  });

  app.get<{ Querystring: Record<string, unknown> }>("/v1/controller/demand", { onRequest }, async (req, reply) => {
    const waitMs = queryInt(req.query.waitMs, "waitMs", 0, ctx.opts.leaseWaitMaxMs);
    const since = req.query.since === undefined ? null : queryInt(req.query.since, "since", 0);
    return reply.code(200).send(await waitDemand(ctx, since, waitMs, clientGone(reply)));
  });

  app.put<{ Body: CapacityRequest }>("/v1/controller/capacity", { schema: { body: CapacityRequest }, onRequest }, async (req, reply) => {
    const pools = req.body.pools.map((p) => ({ ...p, labels: [...p.labels] }));
    return reply.code(200).send(await setCapacity(ctx, pools));
  });
}
