/**
 * AppArmor: applied when the kernel has it enabled and the named profile is loaded; otherwise the
 * reason is logged once per factory (this machine's kernel has no AppArmor; see docs/sandbox.md).
 */
import { readFile } from "node:fs/promises";
import type { SandboxLogger } from "../types.ts";

export const DEFAULT_APPARMOR_PROFILE = "deltaci-sandbox";

export async function detectAppArmor(profile: string, logger: SandboxLogger): Promise<string | null> {
  const enabled = (await readFile("/sys/module/apparmor/parameters/enabled", "utf8").catch(() => "N")).trim() === "Y";
  if (!enabled) {
    logger.info({ apparmor: "unavailable" }, "AppArmor is not enabled on this kernel: job containers run without an AppArmor profile");
    return null;
  }
  const loaded = await readFile("/sys/kernel/security/apparmor/profiles", "utf8").catch(() => "");
  if (!loaded.split("\n").some((l) => l.startsWith(`${profile} `))) {
    logger.warn({ apparmor: "profile-missing", profile }, "AppArmor is enabled but the sandbox profile is not loaded (see docs/sandbox.md): running without it");
    return null;
  }
  return profile;
}
