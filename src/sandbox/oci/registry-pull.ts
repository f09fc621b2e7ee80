/**
 * Registry images: a Docker-style reference (`name` → docker.io/library/name, `host[:port]/path`,
 * optional `docker://`) pulled by manifest digest with skopeo, on the host, once per digest into
 * an OCI layout under `<cacheDir>/images/layouts/`. The pinned digest is checked against the bytes
 * the registry serves; a multi-platform index is resolved to this host's platform manifest.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { DeltaError } from "../../base/errors.ts";
import { defaults } from "../../config/defaults.ts";

const run = promisify(execFile);

export interface RegistryRef {
  /** `host[:port]`, `docker.io` for short names. */
  host: string;
  /** Path in the registry, `library/` added for docker.io short names. */
  repository: string;
}

export interface PullOptions {
  /** `host[:port]` of registries reached without TLS verification (plain HTTP or self-signed). */
  insecureRegistries: readonly string[];
  timeoutMs?: number;
  signal?: AbortSignal | undefined;
}

/** A layout ready to unpack and the manifest in it to unpack (the platform's, for an index). */
export interface PulledLayout {
  layout: string;
  tag: string;
  manifestDigest: string;
}

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** Registry reference of `ref`, or null when `ref` names a local layout or archive. */
export function registryRefOf(ref: string): RegistryRef | null {
  if (ref.startsWith("oci:") || ref.startsWith("oci-archive:")) return null;
  const explicit = ref.startsWith("docker://");
  const body = explicit ? ref.slice("docker://".length) : ref;
  if (!explicit && (body.startsWith("/") || body.startsWith(".") || existsSync(body) || existsSync(body.replace(/:[A-Za-z0-9_.-]+$/, "")))) return null;
  const slash = body.indexOf("/");
  const first = slash < 0 ? "" : body.slice(0, slash);
  const hasHost = slash > 0 && (first.includes(".") || first.includes(":") || first === "localhost");
  const host = hasHost ? first : "docker.io";
  let repository = hasHost ? body.slice(slash + 1) : body;
  // the digest pins the image: a tag beside it is dropped (skopeo refuses tag and digest together)
  repository = repository.replace(/:[A-Za-z0-9_.-]+$/, "");
  if (host === "docker.io" && !repository.includes("/")) repository = `library/${repository}`;
  if (!/^[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*$/.test(repository)) {
    throw new DeltaError("E_SANDBOX", `image ${ref}: not a registry reference nor a local OCI layout`);
  }
  return { host, repository };
}

const PLATFORM_ARCH: Record<string, string> = { x64: "amd64", arm64: "arm64", arm: "arm", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64" };

interface RawManifest {
  mediaType?: string;
  manifests?: Array<{ digest: string; platform?: { os?: string; architecture?: string } }>;
}

/** The manifest to pull for `digest`: itself, or this platform's entry when it is an index. */
async function resolveManifest(src: string, tlsArgs: string[], digest: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<string> {
  const raw = (await run("skopeo", ["inspect", "--raw", ...tlsArgs, `${src}@${digest}`], { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, encoding: "buffer", ...(signal ? { signal } : {}) })).stdout;
  const got = `sha256:${createHash("sha256").update(raw).digest("hex")}`;
  if (got !== digest) throw new Error(`the registry served manifest ${got} for ${digest}`);
  const doc = JSON.parse(raw.toString("utf8")) as RawManifest;
  if (!Array.isArray(doc.manifests)) return digest;
  const arch = PLATFORM_ARCH[process.arch] ?? process.arch;
  const entry = doc.manifests.find((m) => m.platform?.os === "linux" && m.platform.architecture === arch);
  if (!entry) throw new Error(`the image index has no linux/${arch} manifest`);
  return entry.digest;
}

/**
 * Pulls `ref@digest` into `<cacheDir>/images/layouts/<key>` once (`buildOnce` builds it in a temp
 * dir and renames it, so concurrent pulls of one digest never see a half-written layout).
 */
export async function pullRegistryImage(
  cacheDir: string,
  ref: string,
  target: RegistryRef,
  digest: string,
  opts: PullOptions,
  buildOnce: (dir: string, fill: (tmp: string) => Promise<void>) => Promise<void>,
): Promise<PulledLayout> {
  const name = `${target.host}/${target.repository}`;
  const layouts = join(cacheDir, "images", "layouts");
  const dir = registryLayoutDir(cacheDir, target, digest);
  const src = `docker://${name}`;
  const tlsArgs = opts.insecureRegistries.includes(target.host) ? ["--tls-verify=false"] : [];
  const timeoutMs = opts.timeoutMs ?? defaults.imagePullTimeoutMs;
  await mkdir(layouts, { recursive: true, mode: 0o700 });
  try {
    await buildOnce(dir, async (tmp) => {
      const manifest = await resolveManifest(src, tlsArgs, digest, timeoutMs, opts.signal);
      const copyTls = tlsArgs.length > 0 ? ["--src-tls-verify=false"] : [];
      await run("skopeo", ["copy", "--quiet", ...copyTls, `${src}@${manifest}`, `oci:${tmp}:image`], { timeout: timeoutMs, ...(opts.signal ? { signal: opts.signal } : {}) });
      if (!(await manifestsOf(tmp)).includes(manifest)) throw new Error(`the pulled layout does not hold manifest ${manifest}`);
    });
  } catch (e) {
    const killed = (e as { killed?: boolean }).killed === true && opts.signal?.aborted !== true;
    const detail = (killed ? `timed out after ${timeoutMs} ms: ` : "") + message(e).replace(/\s+/g, " ").trim();
    throw new DeltaError("E_SANDBOX", `image ${ref}@${digest}: pull from ${target.host} failed: ${detail}`, { cause: e });
  }
  const manifests = await manifestsOf(dir);
  if (manifests.length !== 1 || manifests[0] === undefined) throw new DeltaError("E_SANDBOX", `image ${ref}@${digest}: cached layout ${dir} holds ${manifests.length} manifests, expected 1`);
  return { layout: dir, tag: "image", manifestDigest: manifests[0] };
}

/** Where `target@digest` is cached (one layout per registry, repository and pinned digest). */
export function registryLayoutDir(cacheDir: string, target: RegistryRef, digest: string): string {
  const key = createHash("sha256").update(`registry\0${target.host}/${target.repository}\0${digest}`).digest("hex").slice(0, 32);
  return join(cacheDir, "images", "layouts", key);
}

async function manifestsOf(layout: string): Promise<string[]> {
  const index = JSON.parse(await readFile(join(layout, "index.json"), "utf8")) as { manifests?: Array<{ digest: string }> };
  return (index.manifests ?? []).map((m) => m.digest);
}
