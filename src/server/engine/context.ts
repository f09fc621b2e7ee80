/** What every engine operation is given: the store, time, knobs, wake-ups and counters. */
import type { Logger } from "pino";
import type { Clock } from "../../base/clock.ts";
import type { GcResult } from "./collector.ts";
import type { ResolvedOptions } from "../options.ts";
import type { KnownTokens } from "./known-tokens.ts";
import type { LeaseWaiters } from "./lease-waiters.ts";
import type { LogDigests } from "./log-digests.ts";
import type { Pool } from "./matching.ts";
import type { Notifier } from "./notifier.ts";
import type { StateStore } from "./state-store.ts";

/** Counters the engine bumps; the HTTP layer backs them with prom-client. */
export interface EngineMetrics {
  leaseExpired(): void;
  retried(): void;
  logBytes(n: number): void;
  leased(): void;
  /** One garbage-collection pass finished (collector.ts). */
  gcPass(r: GcResult): void;
  /** An attempt's log of `bytes` moved to the blob store (log-archive.ts). */
  logArchived(bytes: number): void;
}

export const nullMetrics: EngineMetrics = { leaseExpired() {}, retried() {}, logBytes() {}, leased() {}, gcPass() {}, logArchived() {} };

export interface EngineContext {
  store: StateStore;
  clock: Clock;
  opts: ResolvedOptions;
  events: Notifier;
  waiters: LeaseWaiters;
  metrics: EngineMetrics;
  logger: Logger | undefined;
  /** Pools declared by controllers (PUT /v1/controller/capacity); empty: nothing declared. */
  capacity: { pools: Pool[] };
  /** Bumped whenever demand may have changed; controllers long-poll on it. */
  demand: { version: number };
  /** Artifact uploads being written now (one writer per artifact). */
  uploadsInFlight: Set<string>;
  /** Deletes the partial upload of an artifact that can no longer complete (after commit). */
  discardUpload(artifactId: string): void;
  /** Running digests of live attempts' logs (log-ops.ts). */
  logDigests: LogDigests;
  /** Session and lease tokens known valid, so auth hooks skip a store read (known-tokens.ts). */
  knownTokens: KnownTokens;
  /** Roles this replica holds among those sharing its store (one sweeper at a time). */
  roles: { sweeper: boolean };
  /** Set when the server begins to shut down: long polls and follow streams end. */
  lifecycle: { stopping: boolean };
}
