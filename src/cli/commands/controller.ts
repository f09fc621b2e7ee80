import type { Command } from "commander";

/** Placeholder until the controller issue lands its command here. */
export function registerControllerCommand(_program: Command): void {}
