import type { Command } from "commander";

/** Placeholder until the server issue lands its command here. */
export function registerServerCommand(_program: Command): void {}
