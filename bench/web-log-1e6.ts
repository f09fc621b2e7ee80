/**
 * The web view's job page with a 1,000,000-line log (`seq 1 1000000`, 6.9 MB), in Debian's
 * chromium against a real `deltaci up --isolation process` on loopback:
 *   - finished log: time to first byte and to DOMContentLoaded of the page, and until the last
 *     line shows (the page streams the whole log and indexes it);
 *   - following: the page opened right after submit; when the last line shows, measured from
 *     navigation and from the moment the job API first reports the job finished;
 *   - the page's JS heap (after a forced GC) once the followed log is complete.
 * Baseline in the same run: the same page for a 10-line log. Prints one JSON line with the load
 * average. Usage: tsx bench/web-log-1e6.ts
 */
import { loadavg } from "node:os";
import type { BrowserContext, Page } from "playwright-core";
import { launchBrowser } from "../test/support/browser.ts";
import { startWebStack, type WebStack } from "../test/support/web-stack.ts";

async function signIn(page: Page, stack: WebStack): Promise<void> {
  await page.goto(`${stack.url}/login`);
  await page.getByLabel("API token").fill(stack.token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${stack.url}/`);
}

interface PageFigures {
  ttfbMs: number;
  domContentLoadedMs: number;
  lastLineMs: number;
}

async function openJob(browser: BrowserContext, stack: WebStack, jobId: string, lastLine: string): Promise<{ page: Page; figures: PageFigures; shownAt: number }> {
  const page = await browser.newPage();
  const t0 = Date.now();
  await page.goto(`${stack.url}/jobs/${jobId}`);
  await page.locator(".log-view .row .tx", { hasText: new RegExp(`^${lastLine}$`) }).waitFor({ timeout: 300_000 });
  const shownAt = Date.now();
  const nav = JSON.parse(String(await page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])"))) as { requestStart: number; responseStart: number; domContentLoadedEventEnd: number; startTime: number };
  return { page, shownAt, figures: { ttfbMs: Math.round(nav.responseStart - nav.startTime), domContentLoadedMs: Math.round(nav.domContentLoadedEventEnd - nav.startTime), lastLineMs: shownAt - t0 } };
}

async function heapBytes(page: Page, browser: BrowserContext): Promise<number> {
  const cdp = await browser.newCDPSession(page);
  await cdp.send("HeapProfiler.collectGarbage");
  await cdp.send("Performance.enable");
  const { metrics } = await cdp.send("Performance.getMetrics");
  return metrics.find((m) => m.name === "JSHeapUsedSize")?.value ?? -1;
}

const stack = await startWebStack(2);
let browser: BrowserContext | null = null;
try {
  browser = await launchBrowser(stack.dir);
  await signIn(await browser.newPage(), stack);

  const small = await stack.submit({ name: "ten", steps: [{ name: "run", run: "seq 1 10" }] });
  await stack.waitJob(small);
  const base = await openJob(browser, stack, small, "10");
  const baseHeap = await heapBytes(base.page, browser);

  // Following: opened right after submit.
  const live = await stack.submit({ name: "million-live", steps: [{ name: "run", run: "seq 1 1000000" }] });
  const livePage = openJob(browser, stack, live, "1000000");
  const done = await stack.waitJob(live, undefined, 300_000);
  const jobDoneAt = Date.now();
  const followed = await livePage;
  const liveHeap = await heapBytes(followed.page, browser);

  // Finished: the same log opened after the job ended.
  const finished = await openJob(browser, stack, live, "1000000");

  process.stdout.write(JSON.stringify({
    bench: "web-log-1e6",
    logBytes: done.log.bytes,
    baseline10Lines: { ...base.figures, jsHeapBytes: baseHeap },
    finished1e6: finished.figures,
    following1e6: { ...followed.figures, lastLineAfterJobDoneMs: Math.max(0, followed.shownAt - jobDoneAt), jsHeapBytes: liveHeap },
    loadavg: loadavg(),
  }) + "\n");
} finally {
  await browser?.close().catch(() => undefined);
  await stack.close();
}
