/**
 * An accessibility audit of the page in view with axe-core (an npm dev dependency, nothing is
 * downloaded), injected through the DevTools protocol: Playwright's `evaluate` is not page
 * script, so the page's strict CSP (no inline script) stays on while the audit runs.
 */
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import type { Page } from "playwright-core";

export interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: Array<{ target: unknown[]; failureSummary?: string }>;
}

const AXE_SOURCE = createRequire(import.meta.url).resolve("axe-core/axe.min.js");

/** Violations of impact serious or critical (WCAG 2.x A/AA rules and axe's best practices). */
export async function seriousViolations(page: Page): Promise<AxeViolation[]> {
  if ((await page.evaluate("typeof window.axe")) !== "object") await page.evaluate(await readFile(AXE_SOURCE, "utf8"));
  const result = await page.evaluate<{ violations: AxeViolation[] }>("window.axe.run(document, { resultTypes: ['violations'] })");
  return result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
}

export function describeViolations(where: string, vs: AxeViolation[]): string {
  return vs.map((v) => `${where}: ${v.impact} ${v.id}: ${v.help}\n${v.nodes.slice(0, 5).map((n) => `    ${JSON.stringify(n.target)} ${n.failureSummary?.replace(/\s+/g, " ") ?? ""}`).join("\n")}`).join("\n");
}
