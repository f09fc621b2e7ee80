/**
 * The in-process runners' oci sandbox factory, made before the run's log exists so that the
 * isolation check prepares it (helpers, cgroups, seccomp) while the server starts: its log
 * lines wait until the stack attaches the log, then go there in order.
 */
import { systemClock } from "../../base/clock.ts";
import { CrunSandboxFactory } from "../../sandbox/oci/crun-sandbox-factory.ts";
import type { SandboxLogger } from "../../sandbox/types.ts";

type Line = ["info" | "warn", Record<string, unknown>, string];

export class PendingLog implements SandboxLogger {
  private readonly held: Line[] = [];
  private to: SandboxLogger | null = null;

  info(fields: Record<string, unknown>, msg: string): void {
    this.write(["info", fields, msg]);
  }

  warn(fields: Record<string, unknown>, msg: string): void {
    this.write(["warn", fields, msg]);
  }

  /** From now on lines go to `to`; the held ones first. */
  attach(to: SandboxLogger): void {
    this.to = to;
    for (const line of this.held.splice(0)) this.write(line);
  }

  private write([level, fields, msg]: Line): void {
    if (this.to) this.to[level](fields, msg);
    else this.held.push([level, fields, msg]);
  }
}

export interface EarlyCrunFactory {
  factory: CrunSandboxFactory;
  log: PendingLog;
}

/** `imageRoots`: where the run's jobs may name local OCI images (the shared cache, and the run's own source dir). */
export function newCrunFactory(imageRoots: string[]): EarlyCrunFactory {
  const log = new PendingLog();
  return { factory: new CrunSandboxFactory({ clock: systemClock, logger: log, cgroupParent: "deltaci", imageRoots }), log };
}
