/**
 * OCI images from an OCI layout directory or an OCI archive, pinned by manifest digest. Each
 * digest is unpacked once with umoci (owners as in the image) into a root-only cache dir and
 * shared read-only by every slot: a job sees it through an idmapped mount that shifts the image's
 * ids into the slot's unprivileged range, as the overlay's lower layer. `ref` is `<layout dir>`,
 * `oci:<layout dir>[:<tag>]` or `oci-archive:<file.tar>[:<tag>]` (copied once into a layout with
 * skopeo); the digest must be listed in the layout's index. Any other ref is a registry reference,
 * pulled by digest on the host (registry-pull.ts).
 */
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, readFile, realpath, rename, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { DeltaError } from "../../base/errors.ts";
import { pullRegistryImage, registryRefOf, type PullOptions } from "./registry-pull.ts";

const run = promisify(execFile);

export interface UnpackedImage {
  rootfs: string;
  env: string[];
  hasBash: boolean;
}

interface IndexJson {
  manifests?: Array<{ digest: string; annotations?: Record<string, string> }>;
}

export function parseImageRef(ref: string): { layout: string; tag: string | null; archive: boolean } {
  const archive = ref.startsWith("oci-archive:");
  const body = archive ? ref.slice("oci-archive:".length) : ref.startsWith("oci:") ? ref.slice(4) : ref;
  const m = /^(.*?)(?::([A-Za-z0-9_.-]+))?$/.exec(body);
  return { layout: m?.[1] ?? body, tag: m?.[2] ?? null, archive };
}

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** Creates `dir` by filling a temp dir next to it and renaming it; a concurrent winner's dir is used. */
export async function buildOnce(dir: string, fill: (tmp: string) => Promise<void>): Promise<void> {
  if (existsSync(dir)) return;
  const tmp = `${dir}.tmp-${process.pid}-${randomBytes(6).toString("hex")}`;
  try {
    await fill(tmp);
    await rename(tmp, dir).catch((e: unknown) => {
      if (!existsSync(dir)) throw e;
    });
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/**
 * The layout dir of a ref: the dir itself, or an archive's copy in the cache, keyed by the
 * archive's index.json (which names every manifest by digest), so one image is copied once.
 */
async function layoutOf(cacheDir: string, ref: string, imageRoots: readonly string[]): Promise<string> {
  const parsed = parseImageRef(ref);
  const { tag, archive } = parsed;
  const layout = await underImageRoot(ref, parsed.layout, imageRoots);
  if (!archive) return layout;
  let index: string;
  try {
    index = (await run("tar", ["-xOf", layout, "index.json"], { timeout: 120_000, maxBuffer: 16 * 1024 * 1024 })).stdout;
  } catch (e) {
    throw new DeltaError("E_SANDBOX", `image ${ref}: not an OCI archive (no index.json): ${message(e)}`, { cause: e });
  }
  const key = createHash("sha256").update(index).update(`\0${tag ?? ""}`).digest("hex").slice(0, 32);
  const dir = join(cacheDir, "images", "layouts", key);
  await mkdir(join(cacheDir, "images", "layouts"), { recursive: true, mode: 0o700 });
  try {
    await buildOnce(dir, async (tmp) => {
      await run("skopeo", ["copy", "--quiet", `oci-archive:${layout}${tag ? `:${tag}` : ""}`, `oci:${tmp}:${tag ?? "image"}`], { timeout: 600_000 });
    });
  } catch (e) {
    throw new DeltaError("E_SANDBOX", `image ${ref}: cannot read the OCI archive: ${message(e)}`, { cause: e });
  }
  return dir;
}

/**
 * A job names a local image by path, and the runner (root) reads it: only paths below the image
 * roots the runner was given are allowed, symlinks resolved. One message for "not allowed" and
 * "does not exist", so a job cannot probe the host's files.
 */
async function underImageRoot(ref: string, path: string, imageRoots: readonly string[]): Promise<string> {
  const real = await realpath(resolve(path)).catch(() => null);
  for (const root of imageRoots) {
    const r = await realpath(root).catch(() => null);
    if (real !== null && r !== null && (real === r || real.startsWith(r.endsWith("/") ? r : `${r}/`))) return real;
  }
  throw new DeltaError("E_SANDBOX", `image ${ref}: not an image below the runner's image roots (${imageRoots.join(", ")})`);
}

/** Pulls a registry ref first (`pull`: TLS exceptions, timeout, cancel); the unpacked manifest is the platform's for an index. */
export async function unpackImage(cacheDir: string, ref: string, pinned: string, pull: PullOptions = { insecureRegistries: [] }, imageRoots: readonly string[] = [join(cacheDir, "images")]): Promise<UnpackedImage> {
  const registry = registryRefOf(ref);
  const pulled = registry === null ? null : await pullRegistryImage(cacheDir, ref, registry, pinned, pull, buildOnce);
  const layout = pulled?.layout ?? (await layoutOf(cacheDir, ref, imageRoots));
  const digest = pulled?.manifestDigest ?? pinned;
  const text = await readFile(join(layout, "index.json"), "utf8").catch(() => {
    throw new DeltaError("E_SANDBOX", `image ${ref}: no OCI layout (no readable index.json)`);
  });
  let index: IndexJson;
  try {
    index = JSON.parse(text) as IndexJson;
  } catch {
    throw new DeltaError("E_SANDBOX", `image ${ref}: the layout's index.json is not valid JSON`); // never echo its bytes
  }
  const entry = index.manifests?.find((m) => m.digest === digest);
  const tag = entry?.annotations?.["org.opencontainers.image.ref.name"];
  if (!entry || !tag) throw new DeltaError("E_SANDBOX", `image ${ref}: digest ${digest} is not a tagged manifest of the layout`);
  // root only: the unpacked tree keeps the image's owners, set-uid root binaries included
  const shared = join(cacheDir, "images", "shared");
  await mkdir(shared, { recursive: true, mode: 0o700 });
  await chmod(shared, 0o700);
  const dir = join(shared, digest.replace(/^sha256:/, "").slice(0, 32));
  try {
    await buildOnce(dir, async (tmp) => {
      await run("umoci", ["unpack", "--image", `${layout}:${tag}`, tmp], { timeout: 600_000, maxBuffer: 64 * 1024 * 1024 });
    });
  } catch (e) {
    throw new DeltaError("E_SANDBOX", `image ${ref}@${digest}: unpack failed: ${message(e)}`, { cause: e });
  }
  const config = JSON.parse(await readFile(join(dir, "config.json"), "utf8").catch(() => "{}")) as { process?: { env?: string[] } };
  const rootfs = join(dir, "rootfs");
  return {
    rootfs,
    env: config.process?.env ?? [],
    hasBash: existsSync(join(rootfs, "usr/bin/bash")) || existsSync(join(rootfs, "bin/bash")),
  };
}

/** Mounts an unpacked image read-only at `target`, its ids shifted into the slot's range. */
export async function mountImageForSlot(helper: string, rootfs: string, target: string, uidBase: number, uidCount: number): Promise<void> {
  await mkdir(target, { recursive: true, mode: 0o755 });
  try {
    await run(helper, ["idmap-mount", rootfs, target, String(uidBase), String(uidCount)], { timeout: 60_000 });
  } catch (e) {
    throw new DeltaError("E_SANDBOX", `cannot mount the image for the slot (idmapped mounts need Linux 5.19 or later): ${message(e)}`, { cause: e });
  }
}

/** Mounts the job's root: the image read-only below, the job disk's upper dir above. */
export async function mountOverlay(lower: string, upper: string, work: string, target: string): Promise<void> {
  await mkdir(target, { recursive: true, mode: 0o755 });
  try {
    await run("mount", ["-t", "overlay", "overlay", "-o", `lowerdir=${lower},upperdir=${upper},workdir=${work},nosuid,nodev`, target], { timeout: 60_000 });
  } catch (e) {
    throw new DeltaError("E_SANDBOX", `cannot mount the image overlay: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}
