/**
 * OCI images from an OCI layout directory, pinned by manifest digest. Each (digest, slot uid
 * range) is unpacked once with umoci, owned by the slot's unprivileged uids so root in the
 * sandbox owns its files, and shared read-only by that slot's jobs as the overlay's lower layer.
 * `ref` is `<layout dir>` or `oci:<layout dir>[:<tag>]`; the digest must be listed in its index.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { DeltaError } from "../../base/errors.ts";

const run = promisify(execFile);

export interface UnpackedImage {
  rootfs: string;
  env: string[];
  hasBash: boolean;
}

interface IndexJson {
  manifests?: Array<{ digest: string; annotations?: Record<string, string> }>;
}

export function parseImageRef(ref: string): { layout: string; tag: string | null } {
  const body = ref.startsWith("oci:") ? ref.slice(4) : ref;
  const m = /^(.*?)(?::([A-Za-z0-9_.-]+))?$/.exec(body);
  return { layout: m?.[1] ?? body, tag: m?.[2] ?? null };
}

export async function unpackImage(cacheDir: string, ref: string, digest: string, uidBase: number, uidCount: number): Promise<UnpackedImage> {
  const { layout } = parseImageRef(ref);
  const index = JSON.parse(await readFile(join(layout, "index.json"), "utf8").catch((e: unknown) => {
    throw new DeltaError("E_SANDBOX", `image ${ref}: no OCI layout (${String(e)})`);
  })) as IndexJson;
  const entry = index.manifests?.find((m) => m.digest === digest);
  const tag = entry?.annotations?.["org.opencontainers.image.ref.name"];
  if (!entry || !tag) throw new DeltaError("E_SANDBOX", `image ${ref}: digest ${digest} is not a tagged manifest of the layout`);
  const dir = join(cacheDir, "images", "unpacked", `${digest.replace(/^sha256:/, "").slice(0, 32)}-${uidBase}`);
  if (!existsSync(join(dir, "rootfs"))) {
    await mkdir(join(cacheDir, "images", "unpacked"), { recursive: true, mode: 0o755 });
    const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
    try {
      const map = `0:${uidBase}:${uidCount}`;
      await run("umoci", ["unpack", "--uid-map", map, "--gid-map", map, "--image", `${layout}:${tag}`, tmp], { timeout: 600_000, maxBuffer: 64 * 1024 * 1024 });
      await rename(tmp, dir).catch(async (e: unknown) => {
        if (!existsSync(join(dir, "rootfs"))) throw e; // someone else won the race: use theirs
      });
    } catch (e) {
      throw new DeltaError("E_SANDBOX", `image ${ref}@${digest}: unpack failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }
  const config = JSON.parse(await readFile(join(dir, "config.json"), "utf8").catch(() => "{}")) as { process?: { env?: string[] } };
  const rootfs = join(dir, "rootfs");
  return {
    rootfs,
    env: config.process?.env ?? [],
    hasBash: existsSync(join(rootfs, "usr/bin/bash")) || existsSync(join(rootfs, "bin/bash")),
  };
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
