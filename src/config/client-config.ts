/**
 * Where the CLI's remote commands find their server and API token. Precedence, first wins:
 * flags (`--server`, `--token-file`), then DELTACI_SERVER / DELTACI_API_TOKEN, then the config
 * file (./.deltaci/config.yaml, else ~/.config/deltaci/config.yaml, else $XDG_CONFIG_HOME/…),
 * then the defaults: http://127.0.0.1:8181 and the token `deltaci up` wrote to ./.deltaci/api-token.
 * This is the only place the CLI reads process.env.
 */
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { parse } from "yaml";
import { DeltaError } from "../base/errors.ts";
import { defaults } from "./defaults.ts";

export interface ClientConfig {
  server: string;
  token: string | null;
  /** Where each value came from, for `--verbose` and error messages. */
  sources: { server: string; token: string };
}

export interface ClientFlags {
  server?: string | undefined;
  tokenFile?: string | undefined;
}

interface ConfigFile {
  server?: string;
  "api-token-file"?: string;
  "api-token"?: string;
}

const CONFIG_KEYS = ["server", "api-token-file", "api-token"];

/** The config files looked at, in order. */
export function configFileCandidates(cwd: string, env: NodeJS.ProcessEnv = process.env): string[] {
  const xdg = env.XDG_CONFIG_HOME ? join(env.XDG_CONFIG_HOME, "deltaci", "config.yaml") : null;
  return [join(cwd, defaults.dataDir, "config.yaml"), ...(xdg ? [xdg] : []), join(homedir(), ".config", "deltaci", "config.yaml")];
}

function readConfigFile(path: string): ConfigFile {
  let data: unknown;
  try {
    data = parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new DeltaError("E_INVALID", `${path}: ${(err as Error).message}`, { cause: err });
  }
  if (data === null || data === undefined) return {};
  if (typeof data !== "object" || Array.isArray(data)) throw new DeltaError("E_INVALID", `${path}: expected a map with server and api-token-file`);
  for (const [k, v] of Object.entries(data)) {
    if (!CONFIG_KEYS.includes(k)) throw new DeltaError("E_INVALID", `${path}: unknown key "${k}" (expected one of: ${CONFIG_KEYS.join(", ")})`);
    if (typeof v !== "string") throw new DeltaError("E_INVALID", `${path}: ${k}: expected a string`);
  }
  return data;
}

function readToken(path: string, what: string): string {
  try {
    const t = readFileSync(path, "utf8").trim();
    if (t) return t;
  } catch (err) {
    throw new DeltaError("E_INVALID", `cannot read the API token from ${path} (${what}): ${(err as Error).message}`, { cause: err });
  }
  throw new DeltaError("E_INVALID", `the API token file ${path} (${what}) is empty`);
}

export function loadClientConfig(flags: ClientFlags, cwd: string = process.cwd(), env: NodeJS.ProcessEnv = process.env): ClientConfig {
  const file = configFileCandidates(cwd, env).find((p) => existsSync(p));
  const fileConfig = file ? readConfigFile(file) : {};
  let server = `http://${defaults.listen}`;
  let serverSource = "default";
  if (flags.server) [server, serverSource] = [flags.server, "--server"];
  else if (env.DELTACI_SERVER) [server, serverSource] = [env.DELTACI_SERVER, "DELTACI_SERVER"];
  else if (fileConfig.server) [server, serverSource] = [fileConfig.server, file ?? ""];
  if (!/^https?:\/\//.test(server)) server = `http://${server}`;

  let token: string | null = null;
  let tokenSource = "none";
  if (flags.tokenFile) [token, tokenSource] = [readToken(resolve(cwd, flags.tokenFile), "--token-file"), "--token-file"];
  else if (env.DELTACI_API_TOKEN) [token, tokenSource] = [env.DELTACI_API_TOKEN.trim(), "DELTACI_API_TOKEN"];
  else if (fileConfig["api-token"]) [token, tokenSource] = [fileConfig["api-token"].trim(), file ?? ""];
  else if (fileConfig["api-token-file"]) [token, tokenSource] = [readToken(resolve(cwd, fileConfig["api-token-file"]), file ?? ""), file ?? ""];
  else {
    const local = join(cwd, defaults.dataDir, "api-token");
    if (existsSync(local)) [token, tokenSource] = [readToken(local, "written by deltaci up"), local];
  }
  return { server, token, sources: { server: serverSource, token: tokenSource } };
}

/** Secret values for `--secret NAME` (no value): read from the environment. */
export function secretFromEnv(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env[name];
}

/** True when the CLI should not colour its output (NO_COLOR, https://no-color.org). */
export function noColorRequested(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.NO_COLOR !== undefined && env.NO_COLOR !== "";
}
