/** Capability matching: can a pool's runners serve a requirement set? Same rule as the server's lease matching. */
import { withIsolationLabels, type RequirementSet } from "../protocol/schemas.ts";
import type { Pool } from "./types.ts";

export function poolCanServe(pool: Pool, req: RequirementSet): boolean {
  if (req.os !== null && req.os !== pool.os) return false;
  if (req.arch !== null && req.arch !== pool.arch) return false;
  const labels = withIsolationLabels(pool.labels, pool.isolation);
  for (const label of req.labels) if (!labels.includes(label)) return false;
  const r = req.resources;
  const p = pool.resources;
  return r.cpus <= p.cpus && r.memoryMiB <= p.memoryMiB && r.diskMiB <= p.diskMiB;
}

/**
 * Pools that can serve `req`, most general first (fewest labels, then definition order), so that
 * jobs without special needs do not take up specialised capacity.
 */
export function eligiblePools(pools: readonly Pool[], req: RequirementSet): Pool[] {
  return pools
    .map((pool, index) => ({ pool, index }))
    .filter(({ pool }) => poolCanServe(pool, req))
    .sort((a, b) => a.pool.labels.length - b.pool.labels.length || a.index - b.index)
    .map(({ pool }) => pool);
}

/** A stable key for a requirement set (labels order-insensitive). */
export function requirementKey(req: RequirementSet): string {
  const r = req.resources;
  return `${req.os ?? "*"}/${req.arch ?? "*"}/${[...req.labels].sort().join(",")}/${r.cpus}c/${r.memoryMiB}Mi/${r.diskMiB}MiD`;
}
