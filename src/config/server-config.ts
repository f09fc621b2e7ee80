/**
 * Server settings that come from the environment (the only place the server's env is read):
 * DELTACI_API_TOKEN and DELTACI_CONTROLLER_TOKEN override the generated token files.
 */
export interface ServerEnv {
  apiToken: string | undefined;
  controllerToken: string | undefined;
}

export function serverEnv(env: NodeJS.ProcessEnv = process.env): ServerEnv {
  const clean = (v: string | undefined) => (v && v.trim().length > 0 ? v.trim() : undefined);
  return { apiToken: clean(env.DELTACI_API_TOKEN), controllerToken: clean(env.DELTACI_CONTROLLER_TOKEN) };
}
