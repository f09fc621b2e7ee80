/** The controller's metrics: what a scrape reads. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ControllerMetrics } from "./metrics.ts";
import type { RunnerState } from "./types.ts";

void test("the runners gauge is read at each scrape, not left at the last reconcile's values", async () => {
  const m = new ControllerMetrics();
  const runners: Array<{ pool: string; state: RunnerState }> = [{ pool: "default", state: "starting" }];
  m.watchRunners(() => ({ pools: ["default", "gpu"], runners }));
  const scrape = () => m.registry.getSingleMetricAsString("deltaci_controller_runners");
  assert.match(await scrape(), /^deltaci_controller_runners\{pool="default",state="starting"\} 1$/m);
  runners[0] = { pool: "default", state: "idle" }; // the runner registered between two ticks
  runners.push({ pool: "gpu", state: "busy" });
  const text = await scrape();
  assert.match(text, /^deltaci_controller_runners\{pool="default",state="idle"\} 1$/m);
  assert.match(text, /^deltaci_controller_runners\{pool="default",state="starting"\} 0$/m);
  assert.match(text, /^deltaci_controller_runners\{pool="gpu",state="busy"\} 1$/m);
  assert.match(text, /^deltaci_controller_runners\{pool="gpu",state="idle"\} 0$/m);
});
