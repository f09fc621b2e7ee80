/**
 * Screenshots of the web view for the README, from a real run: `deltaci up --isolation process`
 * on loopback runs a few jobs (one with groups, colours and a JUnit report, one failing, one waiting on a label
 * no pool has), and Debian's chromium photographs the job page and the fleet page.
 * Usage: tsx scripts/web-screenshots.ts [outdir]   (default docs/images)
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { projectRoot } from "../src/config/paths.ts";
import { launchBrowser } from "../test/support/browser.ts";
import { startWebStack } from "../test/support/web-stack.ts";

const JUNIT = `<testsuites><testsuite name="api">${Array.from({ length: 11 }, (_, i) => `<testcase classname="api.Users" name="case ${i + 1}"/>`).join("")}
<testcase classname="api.Users" name="rejects a duplicate email"><failure message="expected status 409, got 500" type="AssertionError">at users.test.ts:42</failure></testcase>
<testcase classname="api.Billing" name="refunds"><skipped/></testcase></testsuite></testsuites>`;

const out = resolve(process.argv[2] ?? join(projectRoot(), "docs", "images"));
await mkdir(out, { recursive: true });
const stack = await startWebStack(2);
const browser = await launchBrowser(stack.dir, { width: 1280, height: 1000 });
try {
  const build = await stack.submit({
    name: "build",
    steps: [
      { name: "install", run: 'echo "::group::npm ci"; for i in 1 2 3; do echo "added package $i"; done; echo "::endgroup::"; echo "installed"' },
      { name: "test", run: 'for i in $(seq 1 12); do printf "\\033[32mok\\033[0m %d - case %d\\n" $i $i; done; printf "\\033[1;33mwarning\\033[0m: 1 slow test\\n"' },
      { name: "report", run: `mkdir -p reports && cat > reports/unit.xml <<'XML'\n${JUNIT}\nXML` },
    ],
    artifacts: [{ name: "junit", paths: ["reports/*.xml"], when: "always", report: "junit" }],
  });
  const failing = await stack.submit({ name: "lint", steps: [{ name: "eslint", run: 'printf "\\033[31merror\\033[0m src/a.ts:3 no-unused-vars\\n"; exit 1' }] });
  const gate = join(stack.dir, "gate");
  const slow = await stack.submit({ name: "deploy-preview", steps: [{ name: "wait", run: `while [ ! -f ${gate} ]; do sleep 0.2; done` }] });
  await stack.submit({ name: "gpu-train", runsOn: { labels: ["gpu"] }, steps: [{ name: "train", run: "true" }] });
  await stack.waitJob(build);
  await stack.waitJob(failing);
  await stack.waitJob(slow, (j) => j.state === "running");

  const page = await browser.newPage();
  await page.goto(`${stack.url}/login`);
  await page.getByLabel("API token").fill(stack.token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${stack.url}/`);
  await page.getByText("gpu-train").first().waitFor();
  await page.screenshot({ path: join(out, "web-jobs.png") });
  await page.goto(`${stack.url}/jobs/${build}`);
  await page.locator(".log-view .row", { hasText: "slow test" }).waitFor();
  await page.getByTestId("report-counts").waitFor();
  await page.screenshot({ path: join(out, "web-job.png"), fullPage: true });
  await page.goto(`${stack.url}/fleet`);
  await page.getByRole("link", { name: "deploy-preview" }).waitFor();
  await page.screenshot({ path: join(out, "web-fleet.png"), fullPage: true });
  await writeFile(gate, "");
  process.stdout.write(`screenshots in ${out}\n`);
} finally {
  await browser.close().catch(() => undefined);
  await stack.close();
}
