/** Names of a job's host objects, derived from the slot and job id so a reaper can find them. */
import { createHash } from "node:crypto";

/** A short, filesystem- and crun-safe name for a job: a readable prefix plus a hash. */
export function jobDirName(jobId: string): string {
  const readable = jobId.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 24);
  return `job-${readable}-${createHash("sha256").update(jobId).digest("hex").slice(0, 8)}`;
}

/** True for names `jobDirName` makes: the only entries of a slot dir that the sandbox reaps. */
export function isJobDirName(name: string): boolean {
  return /^job-.*-[0-9a-f]{8}$/.test(name);
}

/** Container id, cgroup leaf and netns name of a job in a slot (all share the slot prefix). */
export function slotPrefix(slotIndex: number): string {
  return `deltaci-s${slotIndex}-`;
}

export function containerName(slotIndex: number, jobId: string): string {
  return `${slotPrefix(slotIndex)}${createHash("sha256").update(jobId).digest("hex").slice(0, 12)}`;
}
