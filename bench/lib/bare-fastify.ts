/** Baseline: a bare Fastify 5 server with one JSON route (same framework, same machine, no state). */
import Fastify from "fastify";

const app = Fastify({ logger: false });
app.post("/bare", async (req) => ({ ok: true, got: typeof req.body }));
app.get("/bare", async () => ({ ok: true }));
await app.listen({ host: "127.0.0.1", port: 0 });
const addr = app.server.address();
process.stdout.write(`ready at http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}\n`);
process.once("SIGTERM", () => void app.close().then(() => process.exit(0)));
