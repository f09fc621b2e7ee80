import type { Command } from "commander";

/** Placeholder until the runner issue lands its command here. */
export function registerRunnerCommand(_program: Command): void {}
