/**
 * Collects, stages (hashing on the way) and uploads a job's artifacts. One rule → one artifact:
 * a rule whose paths are all plain paths naming exactly one file is uploaded as that file;
 * anything else (wildcards, directories, several files) is packed as a pax tar
 * (`application/x-tar`). Rules matching nothing are reported, not errors.
 */
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { defaults } from "../config/defaults.ts";
import type { ArtifactCreateRequest, ArtifactCreateResponse, ArtifactRule } from "../protocol/schemas.ts";
import { collectFiles } from "./collect.ts";
import { packTar, stageFile } from "./tar-pack.ts";

/** The slice of the protocol client this needs (owned here). */
export interface ArtifactSink {
  create(body: ArtifactCreateRequest, signal: AbortSignal): Promise<ArtifactCreateResponse>;
  upload(target: NonNullable<ArtifactCreateResponse["upload"]>, file: string, size: number, signal: AbortSignal): Promise<void>;
}

export interface ArtifactOutcome {
  name: string;
  artifactId: string | null;
  files: number;
  size: number;
  sha256: string | null;
  /** Human lines for the job log (skipped links, empty matches, errors). */
  notes: string[];
  error: unknown;
}

export interface UploadArtifactsOptions {
  workspace: string;
  stagingDir: string;
  rules: ArtifactRule[];
  sink: ArtifactSink;
  signal: AbortSignal;
}

export async function uploadArtifacts(o: UploadArtifactsOptions): Promise<ArtifactOutcome[]> {
  const out: ArtifactOutcome[] = [];
  for (const [i, rule] of o.rules.entries()) {
    out.push(await uploadOne(o, rule, join(o.stagingDir, `artifact-${i}`)));
  }
  return out;
}

async function uploadOne(o: UploadArtifactsOptions, rule: ArtifactRule, staged: string): Promise<ArtifactOutcome> {
  const outcome: ArtifactOutcome = { name: rule.name, artifactId: null, files: 0, size: 0, sha256: null, notes: [], error: null };
  try {
    const found = await collectFiles(o.workspace, rule.paths);
    for (const s of found.skipped) outcome.notes.push(`artifact ${rule.name}: skipped ${s.path}: ${s.why}`);
    outcome.files = found.files.length;
    if (found.files.length === 0) {
      outcome.notes.push(`artifact ${rule.name}: no files matched ${rule.paths.join(", ")}`);
      return outcome;
    }
    const single = found.literal && found.files.length === 1 && rule.paths.length === 1 && found.files[0];
    const packed = single ? await stageFile(join(o.workspace, single.path), staged, o.signal) : await packTar(o.workspace, found.files, staged, o.signal);
    outcome.size = packed.size;
    outcome.sha256 = packed.sha256;
    const req: ArtifactCreateRequest = single
      ? { name: rule.name, size: packed.size, sha256: packed.sha256, mediaType: "application/octet-stream", path: single.path }
      : { name: rule.name, size: packed.size, sha256: packed.sha256, mediaType: "application/x-tar" };
    let created = await o.sink.create(req, o.signal);
    // A direct upload that failed (an expired URL, a refused commit) asks again: create is
    // idempotent and its fresh descriptor lists only what the store still misses.
    for (let round = 1; created.upload; round++) {
      try {
        await o.sink.upload(created.upload, staged, packed.size, o.signal);
        break;
      } catch (err) {
        if (o.signal.aborted || created.upload.commitUrl === undefined || round >= defaults.directUploadRounds) throw err;
        outcome.notes.push(`artifact ${rule.name}: upload failed (${(err as Error).message}); asking for fresh upload URLs`);
        created = await o.sink.create(req, o.signal);
      }
    }
    outcome.artifactId = created.artifactId;
  } catch (err) {
    outcome.error = err;
    outcome.notes.push(`artifact ${rule.name}: failed: ${(err as Error).message}`);
  } finally {
    await rm(staged, { force: true });
  }
  return outcome;
}
