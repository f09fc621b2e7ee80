/**
 * AppArmor: where the kernel has it enabled, the shipped `deltaci-sandbox` profile
 * (src/sandbox/oci/apparmor/deltaci-sandbox) is loaded with `apparmor_parser -r -W` unless it is
 * loaded already, and applied to the container and every step. Where AppArmor is not enabled (this
 * machine's kernel) or the profile cannot be loaded, the reason is logged once per factory and
 * jobs run without a profile (see docs/sandbox.md).
 */
import { execFile } from "node:child_process";
import { constants } from "node:fs";
import { access, readFile } from "node:fs/promises";
import { join } from "node:path";
import { projectRoot } from "../../config/paths.ts";
import type { SandboxLogger } from "../types.ts";

export const DEFAULT_APPARMOR_PROFILE = "deltaci-sandbox";

/** The host facts the decision depends on; tests point them at temp files and a fake parser. */
export interface AppArmorHost {
  /** `Y` when the kernel has AppArmor enabled. */
  enabledPath: string;
  /** securityfs list of loaded profiles, one `name (mode)` a line. */
  profilesPath: string;
  /** The profile file to load for the default profile name. */
  profileFile: string;
  /** Directories searched for `apparmor_parser`. */
  parserDirs: string[];
}

export type AppArmorState =
  | "disabled" // the kernel has no AppArmor: run without a profile
  | "loaded" // the profile was already loaded
  | "loaded-now" // we loaded the shipped profile
  | "profile-missing" // a custom profile name that nobody loaded
  | "parser-missing" // AppArmor enabled, profile not loaded, no apparmor_parser
  | "load-failed"; // apparmor_parser refused the profile

export interface AppArmorDecision {
  /** The profile to put in `process.apparmorProfile`, or null to run without one. */
  profile: string | null;
  state: AppArmorState;
  message: string;
}

export function apparmorProfileFile(): string {
  return join(projectRoot(), "src", "sandbox", "oci", "apparmor", DEFAULT_APPARMOR_PROFILE);
}

/** Where Debian (and every distribution we know) installs apparmor_parser. */
export const PARSER_DIRS = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"];

export function systemAppArmorHost(): AppArmorHost {
  return {
    enabledPath: "/sys/module/apparmor/parameters/enabled",
    profilesPath: "/sys/kernel/security/apparmor/profiles",
    profileFile: apparmorProfileFile(),
    parserDirs: PARSER_DIRS,
  };
}

async function findExecutable(dirs: string[], name: string): Promise<string | null> {
  for (const dir of dirs) {
    const path = join(dir, name);
    if (await access(path, constants.X_OK).then(() => true, () => false)) return path;
  }
  return null;
}

function run(cmd: string, args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 120_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === "number" ? err.code : 1;
      resolve({ code, output: `${String(stderr)}${String(stdout)}`.trim() || (err?.message ?? "") });
    });
  });
}

/** true/false from the securityfs list, null when that list cannot be read (securityfs not mounted). */
async function isLoaded(host: AppArmorHost, profile: string): Promise<boolean | null> {
  const loaded = await readFile(host.profilesPath, "utf8").catch(() => null);
  return loaded === null ? null : loaded.split("\n").some((l) => l.startsWith(`${profile} `));
}

/** Decides (and where needed loads) the profile; never throws. */
export async function resolveAppArmor(profile: string, host: AppArmorHost): Promise<AppArmorDecision> {
  const enabled = (await readFile(host.enabledPath, "utf8").catch(() => "N")).trim() === "Y";
  if (!enabled) {
    return { profile: null, state: "disabled", message: `AppArmor is not enabled on this kernel (${host.enabledPath} is not Y): job containers run without an AppArmor profile` };
  }
  if ((await isLoaded(host, profile)) === true) return { profile, state: "loaded", message: `AppArmor profile ${profile} is loaded: applied to every job container` };
  if (profile !== DEFAULT_APPARMOR_PROFILE) {
    return { profile: null, state: "profile-missing", message: `AppArmor is enabled but the configured profile ${profile} is not loaded (only ${DEFAULT_APPARMOR_PROFILE} is shipped and loaded automatically): running without a profile` };
  }
  const parser = await findExecutable(host.parserDirs, "apparmor_parser");
  if (parser === null) {
    return { profile: null, state: "parser-missing", message: `AppArmor is enabled but apparmor_parser is not installed (Debian package \`apparmor\`), so the ${profile} profile cannot be loaded: running without a profile` };
  }
  const res = await run(parser, ["-r", "-W", host.profileFile]);
  if (res.code !== 0) {
    return { profile: null, state: "load-failed", message: `AppArmor is enabled but \`${parser} -r -W ${host.profileFile}\` exited ${res.code}: ${res.output}; running without a profile` };
  }
  if ((await isLoaded(host, profile)) === false) {
    return { profile: null, state: "load-failed", message: `AppArmor is enabled and apparmor_parser loaded ${host.profileFile}, but ${profile} is not listed in ${host.profilesPath}: running without a profile` };
  }
  return { profile, state: "loaded-now", message: `AppArmor profile ${profile} loaded from ${host.profileFile}: applied to every job container` };
}

/** Once per factory: the profile to apply, or null; the outcome is logged (info when applied or disabled, warn otherwise). */
export async function detectAppArmor(profile: string, logger: SandboxLogger, host: AppArmorHost = systemAppArmorHost()): Promise<string | null> {
  const d = await resolveAppArmor(profile, host);
  const fields = { apparmor: d.state, profile };
  if (d.state === "disabled" || d.state === "loaded" || d.state === "loaded-now") logger.info(fields, d.message);
  else logger.warn(fields, d.message);
  return d.profile;
}
