import assert from "node:assert/strict";
import { test } from "node:test";
import type { Failure } from "../protocol/schemas.ts";
import { JobStop } from "./job-stop.ts";
import {
  artifactFailureCounts, artifactScopeOf, endsPreparation, failureBeforeSteps, reportModeOf, resultOf, stepStopFor, strongerCause,
  type StopCause,
} from "./stop-cause.ts";

const graceful: StopCause = { kind: "cancel", mode: "graceful" };
const hard: StopCause = { kind: "cancel", mode: "hard" };
const lost: StopCause = { kind: "lease_ended", why: "lost" };
const stale: StopCause = { kind: "lease_ended", why: "stale" };
const stopping: StopCause = { kind: "runner_stopping" };
const logFull: StopCause = { kind: "log_limit" };
const stepFailed: Failure = { reason: "step_failed", step: 0, message: "exited with 1" };

void test("the strongest cause is kept, whatever the order", () => {
  const order = [logFull, stopping, graceful, hard, lost];
  for (const [i, weaker] of order.entries()) {
    for (const stronger of order.slice(i + 1)) {
      assert.deepEqual(strongerCause(weaker, stronger), stronger, `${weaker.kind} then ${stronger.kind}`);
      assert.deepEqual(strongerCause(stronger, weaker), stronger, `${stronger.kind} then ${weaker.kind}`);
    }
  }
  assert.deepEqual(strongerCause(null, logFull), logFull);
  // The first lease end stands.
  assert.deepEqual(strongerCause(stale, lost), stale);
});

void test("once the report started, a lease end no longer changes the cause", () => {
  assert.equal(strongerCause(null, stale, true), null);
  assert.deepEqual(strongerCause(graceful, lost, true), graceful);
  assert.deepEqual(strongerCause(graceful, hard, true), hard);
});

void test("each cause stops the current step with its own grace", () => {
  assert.deepEqual(stepStopFor(graceful, 10_000, 8), { reason: "canceled", graceMs: 10_000, message: "canceled (graceful)" });
  assert.deepEqual(stepStopFor(hard, 10_000, 8), { reason: "canceled", graceMs: 0, message: "canceled (hard)" });
  assert.deepEqual(stepStopFor(stale, 10_000, 8), { reason: "lease_ended", graceMs: 0, message: "lease stale" });
  assert.deepEqual(stepStopFor(stopping, 10_000, 8), { reason: "runner_stopped", graceMs: 10_000, message: "the runner was stopped" });
  assert.deepEqual(stepStopFor(logFull, 10_000, 8), { reason: "log_limit", graceMs: 0, message: "log limit of 8 MiB reached" });
  assert.equal(endsPreparation(logFull), false);
  for (const c of [graceful, hard, lost, stale, stopping]) assert.equal(endsPreparation(c), true, c.kind);
});

void test("the report: complete, cancel-ack after a cancel, only the log tail after a lease end", () => {
  assert.equal(reportModeOf(null), "complete");
  assert.equal(reportModeOf(stopping), "complete");
  assert.equal(reportModeOf(logFull), "complete");
  assert.equal(reportModeOf(graceful), "cancel-ack");
  assert.equal(reportModeOf(hard), "cancel-ack");
  assert.equal(reportModeOf(lost), "tail-only");
  assert.equal(reportModeOf(stale), "tail-only");
});

void test("artifacts: all on success, `always` ones after a failure or a graceful cancel, none after a hard cancel or a lease end", () => {
  assert.equal(artifactScopeOf(null, null), "all");
  assert.equal(artifactScopeOf(null, stepFailed), "always");
  assert.equal(artifactScopeOf(graceful, null), "always");
  assert.equal(artifactScopeOf(stopping, stepFailed), "always");
  assert.equal(artifactScopeOf(hard, null), "none");
  assert.equal(artifactScopeOf(lost, null), "none");
  // A failed upload fails only a job that would otherwise succeed.
  assert.equal(artifactFailureCounts(null, null), true);
  assert.equal(artifactFailureCounts(null, stepFailed), false);
  assert.equal(artifactFailureCounts(graceful, null), false);
  assert.equal(artifactFailureCounts(lost, null), false);
});

void test("a run stopped before its first step: runner_error when the runner stops, else a canceled step", () => {
  assert.equal(failureBeforeSteps(stopping).reason, "runner_error");
  assert.equal(failureBeforeSteps(graceful).reason, "step_failed");
  assert.equal(resultOf(null), "succeeded");
  assert.equal(resultOf(stepFailed), "failed");
  assert.equal(resultOf(failureBeforeSteps(stopping)), "error");
  assert.equal(resultOf({ reason: "sandbox_error", step: null, message: "" }), "error");
  assert.equal(resultOf({ reason: "log_limit", step: null, message: "" }), "failed");
});

void test("JobStop: listeners hear each distinct cause once; signals follow the cause and let go", () => {
  const stop = new JobStop();
  const heard: string[] = [];
  const off = stop.onRaise((c) => heard.push(c.kind));
  const preparing = stop.signalWhen(endsPreparation, "prepare");
  stop.raise(logFull);
  stop.raise(logFull);
  assert.deepEqual(heard, ["log_limit"]);
  assert.equal(preparing.signal.aborted, false);
  stop.raise(graceful);
  assert.equal(preparing.signal.aborted, true);
  assert.deepEqual(stop.cause, graceful);
  // A cause already raised aborts a new signal at once.
  assert.equal(stop.signalWhen((c) => c.kind === "cancel", "x").signal.aborted, true);
  // Released: no longer aborted by a later cause.
  const leaseEnded = stop.signalWhen((c) => c.kind === "lease_ended", "artifacts");
  leaseEnded.release();
  stop.startReporting();
  stop.raise(stale);
  assert.equal(leaseEnded.signal.aborted, false);
  assert.deepEqual(stop.cause, graceful, "a lease end during the report does not change the cause");
  off();
  stop.raise(hard);
  assert.deepEqual(heard, ["log_limit", "cancel", "lease_ended"]);
  assert.deepEqual(stop.cause, hard);
});
