/**
 * A request's logger whose pino child is made on its first line. Fastify makes one child per
 * request (binding `reqId`), and pino runs the redaction paths over the bindings of every child:
 * most requests log nothing, so that work is done only for the ones that do. The child is the
 * same as Fastify's default one (same bindings, same redaction), so what a logged line shows is
 * unchanged.
 */
import type { FastifyBaseLogger } from "fastify";
import type { Bindings, ChildLoggerOptions } from "pino";


export class LazyRequestLogger implements FastifyBaseLogger {
  private real: FastifyBaseLogger | null = null;

  constructor(
    private readonly parent: FastifyBaseLogger,
    private readonly bindings: Bindings,
  ) {}

  private get log(): FastifyBaseLogger {
    return (this.real ??= this.parent.child(this.bindings));
  }

  get level(): string {
    return this.real?.level ?? this.parent.level;
  }

  set level(level: string) {
    this.log.level = level;
  }

  fatal(...args: unknown[]): void {
    Reflect.apply(this.log.fatal, this.log, args);
  }

  error(...args: unknown[]): void {
    Reflect.apply(this.log.error, this.log, args);
  }

  warn(...args: unknown[]): void {
    Reflect.apply(this.log.warn, this.log, args);
  }

  info(...args: unknown[]): void {
    Reflect.apply(this.log.info, this.log, args);
  }

  debug(...args: unknown[]): void {
    Reflect.apply(this.log.debug, this.log, args);
  }

  trace(...args: unknown[]): void {
    Reflect.apply(this.log.trace, this.log, args);
  }

  silent(...args: unknown[]): void {
    Reflect.apply(this.log.silent, this.log, args);
  }

  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.log.child(bindings, options);
  }
}

/** Fastify's `childLoggerFactory`: lazy unless a route sets its own level or serializers. */
export function lazyChildLogger(logger: FastifyBaseLogger, bindings: Bindings, opts: ChildLoggerOptions): FastifyBaseLogger {
  if (opts.level !== undefined || opts.serializers !== undefined) return logger.child(bindings, opts);
  return new LazyRequestLogger(logger, bindings);
}
