/** Exit codes of `deltaci` and the error that carries one up to main.ts. */
export const ExitCode = {
  ok: 0,
  /** A job failed (or errored, or was canceled by someone else). */
  jobFailed: 1,
  /** Invalid input or usage: a bad job file, an unknown flag, a missing secret. */
  usage: 2,
  /** Interrupted (Ctrl-C), after the jobs were canceled. */
  interrupted: 130,
} as const;

/** Thrown to end the command with `code`, after printing `message` (if any) to stderr. */
export class CliExit extends Error {
  readonly exitCode: number;
  constructor(exitCode: number, message = "") {
    super(message);
    this.name = "CliExit";
    this.exitCode = exitCode;
  }
}

export const usageError = (message: string): CliExit => new CliExit(ExitCode.usage, message);
