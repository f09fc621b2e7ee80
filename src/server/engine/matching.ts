/** Pure matching of jobs to runners and to declared pools (no I/O). */
import { TRANSPARENT_EGRESS_LABEL, type Capabilities, type RequirementSet, type SubmittedJobSpec } from "../../protocol/schemas.ts";

export interface Pool {
  name: string;
  os: string;
  arch: string;
  labels: string[];
  resources: { cpus: number; memoryMiB: number; diskMiB: number };
  max: number;
  /** What the controller keeps idle (shown, not used in matching); absent from older controllers. */
  minIdle?: number;
}

export function requirementsOf(spec: SubmittedJobSpec): RequirementSet {
  return {
    os: spec.runsOn.os ?? null,
    arch: spec.runsOn.arch ?? null,
    // transparent egress needs a runner that applies it: one that predates it never advertises the label
    labels: [...new Set([...spec.runsOn.labels, ...(spec.network.egress === "allowlist" && spec.network.transparent === true ? [TRANSPARENT_EGRESS_LABEL] : [])])].sort(),
    resources: { cpus: spec.limits.cpus, memoryMiB: spec.limits.memoryMiB, diskMiB: spec.limits.diskMiB },
  };
}

/** Canonical key of a requirement set: equal requirements, equal keys. */
export function reqKeyOf(req: RequirementSet): string {
  return JSON.stringify([req.os, req.arch, req.labels, req.resources.cpus, req.resources.memoryMiB, req.resources.diskMiB]);
}

export function parseReqKey(key: string): RequirementSet {
  const [os, arch, labels, cpus, memoryMiB, diskMiB] = JSON.parse(key) as [string | null, string | null, string[], number, number, number];
  return { os, arch, labels, resources: { cpus, memoryMiB, diskMiB } };
}

/** Why a runner with `caps` cannot run `req`, or null when it can. */
export function mismatch(req: RequirementSet, caps: Pick<Capabilities, "os" | "arch" | "labels" | "resources">): string | null {
  if (req.os !== null && req.os !== caps.os) return `needs os ${req.os}`;
  if (req.arch !== null && req.arch !== caps.arch) return `needs arch ${req.arch}`;
  const missing = req.labels.filter((l) => !caps.labels.includes(l));
  if (missing.length > 0) return `needs labels [${missing.join(", ")}]`;
  if (req.resources.cpus > caps.resources.cpus) return `needs ${req.resources.cpus} cpus`;
  if (req.resources.memoryMiB > caps.resources.memoryMiB) return `needs ${req.resources.memoryMiB} MiB of memory`;
  if (req.resources.diskMiB > caps.resources.diskMiB) return `needs ${req.resources.diskMiB} MiB of disk`;
  return null;
}

export function matches(req: RequirementSet, caps: Pick<Capabilities, "os" | "arch" | "labels" | "resources">): boolean {
  return mismatch(req, caps) === null;
}

/** Null when some pool can serve `req`; else why no pool can (from the closest pool). */
export function unschedulableReason(req: RequirementSet, pools: readonly Pool[]): string | null {
  if (pools.length === 0) return null;
  const reasons: string[] = [];
  for (const p of pools) {
    if (p.max <= 0) {
      reasons.push(`pool ${p.name} has max 0`);
      continue;
    }
    const why = mismatch(req, p);
    if (why === null) return null;
    reasons.push(`pool ${p.name}: ${why}`);
  }
  return `no pool can run this job (${reasons.join("; ")})`;
}
