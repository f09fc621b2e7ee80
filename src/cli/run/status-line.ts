/**
 * The one place `deltaci run` writes human output. On a TTY it keeps a live status line at the
 * bottom (spinner, what each job waits for, elapsed time), redrawn every 100 ms and cleared
 * before any other line is printed, so nothing is silent for more than a second. Piped, it
 * prints each status change once, then a reminder every `quietReminderMs`.
 */
import type { Clock } from "../../base/clock.ts";

const SPINNER = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

export interface StatusLineOptions {
  write: (text: string) => void;
  tty: boolean;
  clock: Clock;
  /** Piped output: how often an unchanged status is repeated. */
  quietReminderMs?: number;
}

export class StatusLine {
  private readonly o: StatusLineOptions;
  private status = "";
  private shown = false;
  private frame = 0;
  private timer: NodeJS.Timeout | null = null;
  private lastPrintAt = 0;
  private lastStatusPrinted = "";

  constructor(opts: StatusLineOptions) {
    this.o = opts;
  }

  /** Starts redrawing (TTY) or reminding (piped). */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.tick(), this.o.tty ? 100 : 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.clear();
  }

  /**
   * Sets the status text ("" hides it). Piped, a status whose `identity` changed is printed as a
   * line (the identity leaves out counters such as elapsed seconds, so they do not print a line each).
   */
  set(text: string, identity: string = text): void {
    this.status = text;
    if (this.o.tty) return this.draw();
    if (text && identity !== this.lastStatusPrinted) this.printStatus(identity);
  }

  /** Prints whole lines above the status line. */
  print(text: string): void {
    this.clear();
    this.o.write(text);
    this.lastPrintAt = this.o.clock.now();
    if (this.o.tty) this.draw();
  }

  private tick(): void {
    if (this.o.tty) return this.draw();
    const quietMs = this.o.quietReminderMs ?? 5_000;
    if (this.status && this.o.clock.now() - this.lastPrintAt >= quietMs) this.printStatus(this.lastStatusPrinted);
  }

  private printStatus(identity: string): void {
    this.lastStatusPrinted = identity;
    this.o.write(`… ${this.status}\n`);
    this.lastPrintAt = this.o.clock.now();
  }

  private draw(): void {
    if (!this.o.tty) return;
    this.clear();
    if (!this.status) return;
    this.frame = (this.frame + 1) % SPINNER.length;
    const cols = process.stdout.columns > 10 ? process.stdout.columns - 1 : 100;
    const line = `${SPINNER[this.frame]} ${this.status}`;
    this.o.write(`\x1b[2m${line.length > cols ? `${line.slice(0, cols - 1)}…` : line}\x1b[22m`);
    this.shown = true;
  }

  private clear(): void {
    if (this.shown) this.o.write("\r\x1b[2K");
    this.shown = false;
  }
}
