import type { Command } from "commander";

/** Placeholder until the CLI issue lands run/up/validate/submit/jobs/status/logs/cancel/artifacts here. */
export function registerJobCommands(_program: Command): void {}
