/**
 * The relative path an artifact's file had in the workspace (`dist/report.txt`), kept so a
 * download can restore it. One rule for the server (validation) and the CLI (before it writes):
 * POSIX separators, no empty, `.` or `..` segment, no leading `/`, no NUL or backslash.
 */
export const ARTIFACT_PATH_MAX = 1024;

export function isSafeArtifactPath(p: string): boolean {
  if (p.length === 0 || p.length > ARTIFACT_PATH_MAX || p.includes("\0") || p.includes("\\")) return false;
  return p.split("/").every((seg) => seg !== "" && seg !== "." && seg !== "..");
}

/** The last segment of a safe path, as a download's file name. */
export function artifactFileName(p: string): string {
  return p.slice(p.lastIndexOf("/") + 1);
}
