/**
 * Which sandbox a runner prewarms while it registers and waits for a lease: the shape (image,
 * limits, network) of the last job leased on this host, kept in a small file shared by the
 * slots, else the job defaults (host image, default limits, no network). Jobs of one pool tend
 * to look alike, so the next job usually takes the warm sandbox and starts with its first step.
 * Only shapes a sandbox can be built for ahead of the job are remembered (no egress allowlist,
 * no caches: see SandboxFactory.prewarm).
 */
import { randomBytes } from "node:crypto";
import { readFile, rename, unlink, writeFile } from "node:fs/promises";
import { Type, type Static } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { defaults } from "../config/defaults.ts";
import { Image, Limits, type JobSpec } from "../protocol/schemas.ts";
import type { SlotInfo, WarmSpec } from "../sandbox/types.ts";

const Shape = Type.Object({ image: Image, limits: Limits }, { additionalProperties: false });
type Shape = Static<typeof Shape>;

/** What a job file that says nothing gets (src/config/defaults.ts). */
export function defaultShape(): Shape {
  return {
    image: { kind: "host" },
    limits: {
      timeoutMs: defaults.jobTimeoutMs, cpus: defaults.cpus, memoryMiB: defaults.memoryMiB,
      diskMiB: defaults.diskMiB, pids: defaults.pids, logMiB: defaults.logMiB,
    },
  };
}

/** The spec to prewarm in `slot`: the remembered shape, or the defaults when there is none (or it is unreadable). */
export async function warmSpec(file: string | null, slot: SlotInfo): Promise<WarmSpec> {
  let shape = defaultShape();
  if (file !== null) {
    const saved: unknown = await readFile(file, "utf8").then((t) => JSON.parse(t) as unknown).catch(() => null);
    if (Value.Check(Shape, saved)) shape = saved;
  }
  return { slot, image: shape.image, limits: shape.limits, network: { egress: "none" }, caches: [] };
}

/**
 * Whether `job` has the image and limits of `spec` (key order aside). `WarmShapes` does not write
 * a shape the file already holds as far as it knows: a write allocates an inode (a temp file,
 * renamed), 0.5–1 ms of CPU on a busy ext4, on the lease-to-step path. Only when another process
 * wrote another shape in between does the file then keep that one: the next prewarm may miss,
 * and its job builds its own sandbox.
 */
export function sameShape(job: Pick<JobSpec, "image" | "limits">, spec: Pick<WarmSpec, "image" | "limits">): boolean {
  return Value.Equal(job.image, spec.image) && Value.Equal(job.limits, spec.limits);
}

/** Remembers `job`'s shape for the next runner, when it is one that can be prewarmed. Never throws. */
export async function rememberShape(file: string | null, job: Pick<JobSpec, "image" | "limits" | "network" | "caches">): Promise<void> {
  if (file === null || job.network.egress !== "none" || job.caches.length > 0) return;
  const shape: Shape = { image: job.image, limits: job.limits };
  // Runners share the file: a private temp file renamed over it, so a reader never sees half of it.
  const tmp = `${file}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(tmp, JSON.stringify(shape), { mode: 0o600 })
    .then(() => rename(tmp, file))
    .catch(() => unlink(tmp).catch(() => {}));
}

/**
 * The warm shape as one process keeps it (a runner host's sessions share one): the file is read
 * once, and written only when a job's shape differs from the one last read or written, so a host
 * whose jobs look alike does no file I/O per job for it (a read per prewarm and a write per job
 * before: ~1.5 ms per job of the host's event loop in its profile). Other processes sharing the
 * file (other hosts) see this one's changes; this one keeps its own last job's shape.
 */
export class WarmShapes {
  private last: Promise<Shape> | null = null;
  /** The shape as the file holds it, as far as this process knows. */
  private inFile: Shape | null = null;

  constructor(private readonly file: string | null) {}

  /** The spec to prewarm in `slot` (see `warmSpec`). */
  async spec(slot: SlotInfo): Promise<WarmSpec> {
    this.last ??= warmSpec(this.file, slot).then(({ image, limits }) => {
      const shape = { image, limits };
      this.inFile ??= shape;
      return shape;
    });
    const { image, limits } = await this.last;
    return { slot, image, limits, network: { egress: "none" }, caches: [] };
  }

  /** Remembers `job`'s shape (see `rememberShape`); writes the file only when it changed. Never throws. */
  async remember(job: Pick<JobSpec, "image" | "limits" | "network" | "caches">): Promise<void> {
    if (this.file === null || job.network.egress !== "none" || job.caches.length > 0) return;
    const shape: Shape = { image: job.image, limits: job.limits };
    this.last = Promise.resolve(shape);
    if (this.inFile !== null && sameShape(job, this.inFile)) return;
    this.inFile = shape;
    await rememberShape(this.file, job);
  }
}
