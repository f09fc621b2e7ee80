/**
 * The job containers' seccomp filter, prepared once per factory: the containers-common profile
 * converted and hardened (seccomp-profile.ts), then compiled to BPF with libseccomp and cached
 * by content hash, so crun loads it raw (`run.oci.seccomp_bpf_data`) instead of compiling the
 * JSON on every `run` and `exec`. Without a compiler the JSON profile is used, with a warning.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { release } from "node:os";
import { join } from "node:path";
import type { SandboxLogger } from "../types.ts";
import { buildSeccompExporter } from "./native-tools.ts";
import { exporterInput, hardenSeccomp, toOciSeccomp, type OciSeccomp } from "./seccomp-profile.ts";

export interface PreparedSeccomp {
  profile: OciSeccomp;
  /** Base64 of the compiled filter, or null to let crun compile `profile`. */
  bpfBase64: string | null;
}

function compile(exporter: string, input: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = execFile(exporter, [], { encoding: "buffer", maxBuffer: 4 * 1024 * 1024, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}: ${stderr.toString()}`));
      else resolve(stdout);
    });
    child.stdin?.end(input);
  });
}

export async function prepareSeccomp(cacheDir: string, profilePath: string, caps: string[], logger: SandboxLogger): Promise<PreparedSeccomp> {
  const text = await readFile(profilePath, "utf8");
  const profile = hardenSeccomp(toOciSeccomp(JSON.parse(text), caps));
  const input = exporterInput(profile);
  try {
    const exporter = await buildSeccompExporter(cacheDir);
    const key = createHash("sha256").update(input).update(exporter.path).update(release()).digest("hex").slice(0, 24);
    const dir = join(cacheDir, "seccomp");
    const file = join(dir, `${key}.bpf`);
    if (!existsSync(file)) {
      const bpf = await compile(exporter.path, input);
      if (bpf.length === 0 || bpf.length % 8 !== 0) throw new Error(`compiled filter has ${bpf.length} bytes`);
      await mkdir(dir, { recursive: true });
      await writeFile(`${file}.tmp-${process.pid}`, bpf);
      await rename(`${file}.tmp-${process.pid}`, file);
    }
    return { profile, bpfBase64: (await readFile(file)).toString("base64") };
  } catch (e) {
    logger.warn({ err: e instanceof Error ? e.message : String(e) }, "cannot precompile the seccomp filter: crun compiles the JSON profile on every start (slower)");
    return { profile, bpfBase64: null };
  }
}
