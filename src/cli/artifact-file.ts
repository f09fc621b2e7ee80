/**
 * Where a downloaded artifact goes under DIR: `DIR/<name>/<path>` for a single file that kept
 * its workspace-relative path (`report/dist/report.txt`: name and extension survive, as GitLab
 * and GitHub users expect), `DIR/<name>` otherwise (a tar, extracted there; or an artifact from
 * an older runner). The server's path is checked again here: it never leaves DIR/<name>.
 */
import { join } from "node:path";
import { isSafeArtifactPath } from "../protocol/artifact-path.ts";
import type { JobStatus } from "../protocol/schemas.ts";

export function artifactFile(dir: string, a: Pick<JobStatus["artifacts"][number], "name" | "path" | "mediaType">): string {
  if (a.mediaType !== "application/x-tar" && a.path !== null && a.path !== undefined && isSafeArtifactPath(a.path)) return join(dir, a.name, a.path);
  return join(dir, a.name);
}
