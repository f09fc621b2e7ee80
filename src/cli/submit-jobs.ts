/**
 * Shared by `run` and `submit`: pack and upload the source once, then submit every job in parallel.
 * A job whose file names a git source keeps it and gets no archive; when every job does, nothing is packed.
 */
import type { JobApiClient } from "../client/job-api-client.ts";
import type { ParsedJob } from "../jobfile/parse.ts";
import { secretsForJob } from "./secrets.ts";
import { packSource } from "./source-pack.ts";

export interface SubmittedJob {
  job: ParsedJob;
  jobId: string;
  runId: string;
}

export interface SubmitOptions {
  jobs: ParsedJob[];
  /** Directory packed as the source of the jobs without a git source, an archive already being packed, or null to send none. */
  source: string | Promise<PackedSource> | null;
  secrets: Map<string, string>;
  fork: boolean;
  signal?: AbortSignal;
  onProgress?: (text: string) => void;
  /** Declare the source before uploading it (JobApiClient.uploadSource); default true. */
  declareSource?: boolean;
}

type PackedSource = Awaited<ReturnType<typeof packSource>>;

/** Whether the job takes the packed local directory as its source (it does unless its file names a git source). */
export function takesLocalSource(job: ParsedJob): boolean {
  return job.spec.source.kind !== "git";
}

export async function uploadSource(client: JobApiClient, source: string | Promise<PackedSource>, onProgress?: (text: string) => void, signal?: AbortSignal, declare = true): Promise<string> {
  const packed = await (typeof source === "string" ? packSource(source) : source);
  for (const w of packed.warnings) onProgress?.(`warning: source: ${w}`);
  onProgress?.(`source: ${packed.files} files (${(packed.tar.length / 1024).toFixed(0)} KiB, ${packed.mode === "git" ? "git-tracked and untracked-not-ignored" : "not ignored by .gitignore"})`);
  const { sha256 } = await client.uploadSource(packed.tar, signal, { declare });
  return sha256;
}

export async function submitJobs(client: JobApiClient, opts: SubmitOptions): Promise<SubmittedJob[]> {
  // Secrets are checked before anything is uploaded, so a missing one costs nothing.
  const secrets = new Map(opts.jobs.map((j) => [j.name, secretsForJob(j, opts.secrets, opts.fork)]));
  const sha256 = opts.source === null || !opts.jobs.some(takesLocalSource) ? null : await uploadSource(client, opts.source, opts.onProgress, opts.signal, opts.declareSource !== false);
  for (const job of opts.jobs) {
    const src = job.spec.source;
    if (src.kind === "git") opts.onProgress?.(`source${opts.jobs.length > 1 ? ` of ${job.name}` : ""}: git ${src.url} ${src.commit ? `at ${src.commit}` : `ref ${src.ref}`} (cloned in the sandbox)`);
  }
  return Promise.all(
    opts.jobs.map(async (job) => {
      const local = sha256 === null ? { kind: "none" as const } : { kind: "archive" as const, sha256 };
      const spec = { ...job.spec, source: takesLocalSource(job) ? local : job.spec.source };
      if (opts.fork) spec.caches = spec.caches.map((c) => ({ ...c, readOnly: true }));
      const jobSecrets = secrets.get(job.name) ?? {};
      const res = await client.submit({ spec, fork: opts.fork, ...(Object.keys(jobSecrets).length > 0 ? { secrets: jobSecrets } : {}) }, opts.signal);
      return { job, jobId: res.jobId, runId: res.runId };
    }),
  );
}
