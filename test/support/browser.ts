/**
 * A real browser for the web view's tests: Debian's chromium (scripts/setup.sh installs it)
 * driven by playwright-core, which downloads nothing. Each launch gets a fresh profile under
 * the test's own temp dir; `close()` ends the browser (its process tree) and nothing else.
 */
import { join } from "node:path";
import { chromium, type BrowserContext } from "playwright-core";

export const CHROMIUM = "/usr/bin/chromium";

const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync",
];

export async function launchBrowser(dir: string, viewport = { width: 1280, height: 900 }): Promise<BrowserContext> {
  return chromium.launchPersistentContext(join(dir, "chromium-profile"), {
    executablePath: CHROMIUM, headless: true, args: FLAGS, viewport, acceptDownloads: true, downloadsPath: join(dir, "downloads"),
  });
}
