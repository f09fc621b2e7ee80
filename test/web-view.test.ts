/**
 * The web view in a real browser (Debian's chromium via playwright-core) against a real
 * `deltaci up` with process-isolation runners on loopback: sign-in and sign-out, the live job
 * list, the live log (follow, folding, line links, search), cancel graceful then hard, artifact
 * download, injection through log text, the fleet page, a 1e6-line log, test reports, and an
 * axe-core accessibility audit of every page. Screenshots of each
 * page go to the test's temp dir (kept when DCI_WEB_SHOTS names a dir to copy them to).
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { cp, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { BrowserContext, Page } from "playwright-core";
import { describeViolations, seriousViolations } from "./support/axe-audit.ts";
import { launchBrowser } from "./support/browser.ts";
import { startWebStack, type WebStack } from "./support/web-stack.ts";

let stack: WebStack;
let browser: BrowserContext;
let shots: string;

before(async () => {
  stack = await startWebStack(3);
  browser = await launchBrowser(stack.dir);
  shots = join(stack.dir, "screenshots");
  await mkdir(shots, { recursive: true });
});

after(async () => {
  const keep = process.env.DCI_WEB_SHOTS;
  if (keep && shots) await cp(shots, keep, { recursive: true }).catch(() => undefined);
  await browser?.close().catch(() => undefined);
  await stack?.close();
});

/** A page with CSP violations and page errors collected. */
async function newPage(): Promise<{ page: Page; problems: string[] }> {
  const page = await browser.newPage();
  const problems: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error" && !/Failed to load resource|net::ERR_ABORTED/.test(m.text())) problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(String(e)));
  return { page, problems };
}

async function signIn(page: Page): Promise<void> {
  await page.goto(`${stack.url}/login`);
  await page.getByLabel("API token").fill(stack.token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${stack.url}/`);
  await page.getByRole("heading", { name: /Jobs/ }).waitFor();
}

const sh = (run: string, name = "run") => ({ name, run });

/** Polls `probe` from here (the page's CSP rightly refuses the string eval of waitForFunction). */
async function until(what: string, probe: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

void test("sign-in sets an HttpOnly SameSite=Strict cookie, never stores the token; sign-out ends the session", async () => {
  const { page, problems } = await newPage();
  await page.goto(`${stack.url}/`);
  await page.waitForURL(`${stack.url}/login`);
  await page.getByLabel("API token").fill("dci_api_wrong");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").waitFor();
  await page.screenshot({ path: join(shots, "login.png") });

  await signIn(page);
  const cookies = await browser.cookies(stack.url);
  const session = cookies.find((c) => c.name === "deltaci_session");
  assert.ok(session, "session cookie set");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  assert.ok(!cookies.some((c) => c.value.includes(stack.token)), "the token is not a cookie");
  const storage = await page.evaluate("JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage), document.cookie])");
  assert.ok(!String(storage).includes(stack.token) && !String(storage).includes(session.value), `storage: ${String(storage)}`);
  assert.ok(!page.url().includes(stack.token));

  // A cross-site style request without the CSRF header is refused, even with the cookie.
  const forged = await page.evaluate(`fetch("/web/api/jobs/job_x/cancel", { method: "POST", headers: { "content-type": "application/json" }, body: '{"mode":"hard"}' }).then((r) => r.status)`);
  assert.equal(forged, 403);

  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(`${stack.url}/login`);
  const r = await fetch(`${stack.url}/web/api/jobs`, { headers: { cookie: `deltaci_session=${session.value}` } });
  assert.equal(r.status, 401, "the old cookie no longer works");
  await page.goto(`${stack.url}/fleet`);
  await page.waitForURL(`${stack.url}/login`);
  assert.deepEqual(problems, []);
  await page.close();
});

void test("the jobs list shows a submitted job and its state changes without a reload; filters and paging", async () => {
  const { page, problems } = await newPage();
  await signIn(page);
  await page.getByText("live", { exact: true }).waitFor();
  await page.evaluate("window.__noReload = 1");
  const gate = join(stack.dir, "list-gate");
  const id = await stack.submit({ name: "list-live", runsOn: { labels: [] }, steps: [sh(`while [ ! -f ${gate} ]; do sleep 0.1; done`)] });
  const row = page.locator(`tr[data-job="${id}"]`);
  await row.locator(".state", { hasText: "running" }).waitFor({ timeout: 60_000 });
  await writeFile(gate, "");
  await row.locator(".state", { hasText: "succeeded" }).waitFor({ timeout: 60_000 });
  assert.equal(await page.evaluate("window.__noReload"), 1, "no reload happened");
  await page.screenshot({ path: join(shots, "jobs.png"), fullPage: true });

  await page.getByLabel("Name").fill("no-such-job-name");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.getByText("No jobs match these filters.").waitFor();
  assert.match(page.url(), /name=no-such-job-name/);
  await page.getByLabel("Name").fill("list-live");
  await page.getByLabel("State").selectOption("succeeded");
  await page.getByRole("button", { name: "Filter" }).click();
  await row.waitFor();
  assert.deepEqual(problems, []);
  await page.close();
});

void test("the job page follows a running job's log; steps and groups fold; line links and search work", async () => {
  const { page, problems } = await newPage();
  await signIn(page);
  const gate = join(stack.dir, "log-gate");
  const id = await stack.submit({
    name: "follow",
    steps: [
      sh('echo "::group::deps"; echo dep-line-1; echo dep-line-2; echo "::endgroup::"; echo after-deps; printf "\\033[31mred text\\033[0m\\n"', "setup"),
      sh(`i=0; while [ ! -f ${gate} ]; do i=$((i+1)); echo "waiting $i"; sleep 0.3; done; echo released`, "wait"),
    ],
  });
  await page.goto(`${stack.url}/jobs/${id}`);
  const log = page.locator(".log-view");
  const waiting = async () => Number(/waiting (\d+)/.exec((await log.locator(".row", { hasText: /waiting \d+/ }).last().textContent()) ?? "")?.[1] ?? 0);
  await log.locator(".row", { hasText: /waiting \d+/ }).first().waitFor({ timeout: 60_000 });
  const seen = await waiting();
  await until(`a line after "waiting ${seen + 2}" shows`, async () => (await waiting()) > seen + 2);
  await writeFile(gate, "");
  await log.locator(".row", { hasText: "released" }).waitFor({ timeout: 60_000 });
  await page.locator("h1 .state", { hasText: "succeeded" }).waitFor({ timeout: 60_000 });
  await page.screenshot({ path: join(shots, "job.png"), fullPage: true });

  // Back to the top: the GitHub group is folded, the step is open; ANSI red is a class.
  await page.getByRole("checkbox", { name: "Follow" }).uncheck();
  await log.evaluate("(el) => { el.scrollTop = 0; }");
  const group = log.getByRole("button", { name: /deps/ });
  assert.equal(await group.getAttribute("aria-expanded"), "false");
  assert.equal(await log.locator(".row", { hasText: "dep-line-1" }).count(), 0);
  await group.click();
  await log.locator(".row", { hasText: "dep-line-1" }).waitFor();
  assert.equal(await log.locator(".row .f1", { hasText: "red text" }).count(), 1);
  const setup = log.getByRole("button", { name: /setup/ });
  await setup.click();
  assert.equal(await setup.getAttribute("aria-expanded"), "false");
  assert.equal(await log.locator(".row", { hasText: "after-deps" }).count(), 0);
  await setup.click();
  await log.locator(".row", { hasText: "after-deps" }).waitFor();

  // Steps table: both steps succeeded with exit code 0.
  const steps = page.locator("table.steps tbody tr");
  assert.equal(await steps.count(), 2);
  assert.match((await steps.nth(1).textContent()) ?? "", /wait.*succeeded.*0/);

  // Search finds the line and marks it; a line link marks its line.
  await page.getByLabel("Search the log").fill("RELEASED");
  await page.getByRole("button", { name: "Find" }).click();
  await page.getByText("1 / 1").waitFor();
  await log.locator(".row.hit", { hasText: "released" }).waitFor();
  await page.goto(`${stack.url}/jobs/${id}#L3`);
  await log.locator('.row.hit[data-line="3"]').waitFor();
  assert.notEqual(await page.getByRole("link", { name: "Download raw log" }).getAttribute("download"), null);
  assert.deepEqual(problems, []);
  await page.close();
});

void test("cancel from the page: graceful first, then hard", async () => {
  const { page, problems } = await newPage();
  await signIn(page);
  const id = await stack.submit({ name: "cancel-me", steps: [sh("trap '' TERM; echo started; while true; do sleep 0.2; done")] });
  await page.goto(`${stack.url}/jobs/${id}`);
  await page.locator(".log-view .row", { hasText: "started" }).waitFor({ timeout: 60_000 });
  await page.getByRole("button", { name: "Cancel" }).click();
  await page.getByRole("button", { name: "Stop now (hard)" }).click({ timeout: 30_000 });
  await page.locator("h1 .state", { hasText: "canceled" }).waitFor({ timeout: 60_000 });
  const j = await stack.job(id);
  assert.equal(j.state, "canceled");
  assert.ok(j.transitions.some((t) => t.reason === "cancel requested (graceful)"), JSON.stringify(j.transitions));
  assert.ok(j.transitions.some((t) => t.reason === "cancel escalated to hard"), JSON.stringify(j.transitions));
  assert.deepEqual(problems, []);
  await page.close();
});

void test("artifacts download as attachments; log text with HTML and escape sequences stays text", async () => {
  const { page, problems } = await newPage();
  await signIn(page);
  const html = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=1>";
  const forged = "##[deltaci 0000000000000000] step-start {\"index\":5,\"name\":\"forged\"}";
  const id = await stack.submit({
    name: "inject",
    steps: [sh([
      `mkdir -p out && printf '%s' '${html}' > out/report.html`,
      `printf '%s\\n' '${html}'`,
      `printf '\\033]0;PWNED-TITLE\\007title\\n'`,
      `printf '\\033]8;;javascript:window.__pwned=1\\033\\\\click me\\033]8;;\\033\\\\\\n'`,
      `printf '%s\\n' '${forged}'`,
      "echo '::endgroup::'; echo '--- not a step'",
    ].join("\n"), "evil")],
    artifacts: [{ name: "report.html", paths: ["out/report.html"], when: "always" }],
  });
  await stack.waitJob(id);
  await page.goto(`${stack.url}/jobs/${id}`);
  const log = page.locator(".log-view");
  await log.locator(".row", { hasText: "click me" }).waitFor({ timeout: 60_000 });
  await log.locator(".row", { hasText: html }).first().waitFor();
  assert.equal(await page.evaluate("window.__pwned"), undefined);
  assert.ok(!(await page.title()).includes("PWNED"));
  assert.equal(await log.locator("img, script, iframe").count(), 0);
  assert.equal(await log.locator("a:not(.ln)").count(), 0, "no link but line numbers");
  assert.equal(await log.locator(".row.head.step").count(), 1, "the forged step-start is text");
  await log.locator(".row", { hasText: forged }).waitFor();

  const link = page.getByRole("link", { name: "report.html" });
  const [download] = await Promise.all([page.waitForEvent("download"), link.click()]);
  assert.equal(download.suggestedFilename(), "report.html");
  const saved = join(stack.dir, "report-download.html");
  await download.saveAs(saved);
  assert.equal(await readFile(saved, "utf8"), html);
  const res = await page.request.get(`${stack.url}/web/api/jobs/${id}/artifacts/report.html`);
  assert.match(res.headers()["content-disposition"] ?? "", /^attachment/);
  assert.equal(res.headers()["content-type"], "application/octet-stream");
  assert.equal(page.url(), `${stack.url}/jobs/${id}`, "the artifact was not opened as a page");
  assert.equal(await page.evaluate("window.__pwned"), undefined);
  assert.deepEqual(problems, []);
  await page.close();
});

void test("the fleet page shows runners and the queue live", async () => {
  const { page, problems } = await newPage();
  await signIn(page);
  const gate = join(stack.dir, "fleet-gate");
  const id = await stack.submit({ name: "fleet-busy", steps: [sh(`while [ ! -f ${gate} ]; do sleep 0.1; done`)] });
  const unsched = await stack.submit({ name: "needs-gpu", runsOn: { labels: ["gpu"] }, steps: [sh("true")] });
  await page.goto(`${stack.url}/fleet`);
  await page.getByRole("link", { name: "fleet-busy" }).waitFor({ timeout: 60_000 });
  await page.locator(".unschedulable", { hasText: "needs-gpu" }).waitFor({ timeout: 60_000 });
  await page.getByText("Queue depth").waitFor();
  // The controller of `up --min-idle 0` declares its pool's min-idle ("–" would mean not reported).
  const poolRow = page.getByRole("region", { name: "Pools table" }).locator("tbody tr").first();
  assert.equal(await poolRow.locator("td").nth(5).textContent(), "0");
  await page.screenshot({ path: join(shots, "fleet.png"), fullPage: true });
  await writeFile(gate, "");
  await stack.waitJob(id);
  await page.getByRole("link", { name: "fleet-busy" }).waitFor({ state: "detached", timeout: 60_000 });
  await fetch(`${stack.url}/v1/jobs/${unsched}/cancel`, { method: "POST", headers: { authorization: `Bearer ${stack.token}`, "content-type": "application/json" }, body: "{}" });
  assert.deepEqual(problems, []);
  await page.close();
});

void test("a 1,000,000-line log opens and follows to its last line with a bounded DOM", async () => {
  const { page, problems } = await newPage();
  await signIn(page);
  const id = await stack.submit({ name: "million", steps: [sh("seq 1 1000000")] });
  await page.goto(`${stack.url}/jobs/${id}`);
  const last = page.locator(".log-view .row .tx", { hasText: /^1000000$/ });
  await last.waitFor({ timeout: 180_000 }).catch(async (err: unknown) => {
    const rows = await page.locator(".log-view .row .tx").allTextContents();
    throw new Error(`${await page.locator("#log-h").textContent()}; last rows ${JSON.stringify(rows.slice(-3))}; job ${JSON.stringify((await stack.job(id)).state)}`, { cause: err });
  });
  await page.locator("h1 .state", { hasText: "succeeded" }).waitFor({ timeout: 60_000 });
  const rows = await page.locator(".log-view .row").count();
  assert.ok(rows < 200, `${rows} rows in the DOM`);
  await page.getByText(/1,000,00\d lines/).waitFor();
  await page.getByLabel("Search the log").fill("999999");
  await page.getByRole("button", { name: "Find" }).click();
  await page.locator(".log-view .row.hit", { hasText: "999999" }).waitFor();
  await page.setViewportSize({ width: 360, height: 740 });
  await page.screenshot({ path: join(shots, "job-million-360px.png") });
  assert.deepEqual(problems, []);
  await page.close();
});

const JUNIT_FAILING = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites><testsuite name="math">
<testcase classname="math.Add" name="adds"/>
<testcase classname="math.Add" name="overflows"><failure message="expected 2 &lt; 1" type="AssertionError">at add (math.js:3)</failure></testcase>
<testcase classname="math.Todo" name="later"><skipped/></testcase>
</testsuite></testsuites>`;

void test("test reports: a failed job's JUnit report shows its counts and failed cases on the job page", async () => {
  const { page, problems } = await newPage();
  await signIn(page);
  const id = await stack.submit({
    name: "junit",
    steps: [sh(`mkdir -p reports && cat > reports/unit.xml <<'XML'\n${JUNIT_FAILING}\nXML\nprintf '<testsuite><testcase name="a">' > reports/broken.xml; exit 1`, "test")],
    artifacts: [{ name: "junit", paths: ["reports/*.xml"], when: "always", report: "junit" }],
  });
  await stack.waitJob(id);
  await page.goto(`${stack.url}/jobs/${id}`);
  const tests = page.getByRole("region", { name: "Tests" });
  await tests.getByTestId("report-counts").waitFor({ timeout: 60_000 });
  assert.match((await tests.getByTestId("report-counts").textContent()) ?? "", /3 tests: 1 passed 1 failed 1 skipped/);
  const failed = tests.getByRole("list", { name: "Failed tests in junit" });
  assert.match((await failed.textContent()) ?? "", /overflows.*math › math\.Add.*expected 2 < 1/);
  await tests.getByText(/Notice: reports\/broken\.xml: malformed XML/).waitFor();
  await failed.getByText("Details (AssertionError)").click();
  await failed.getByText("at add (math.js:3)").waitFor();
  await page.screenshot({ path: join(shots, "job-test-report.png"), fullPage: true });
  const vs = await seriousViolations(page);
  assert.equal(vs.length, 0, describeViolations("/jobs/:id with a test report", vs));
  assert.deepEqual(problems, []);
  await page.close();
});

void test("accessibility: axe-core finds no serious or critical violation on any page, wide and 360 px", async () => {
  const { page, problems } = await newPage();
  const found: string[] = [];
  const audit = async (where: string) => {
    const vs = await seriousViolations(page);
    if (vs.length > 0) found.push(describeViolations(where, vs));
  };
  await page.goto(`${stack.url}/login`);
  await page.getByLabel("API token").waitFor();
  await audit("/login");
  await signIn(page);
  const done = await stack.submit({
    name: "a11y-done",
    steps: [sh('echo "::group::deps"; echo in-group; echo "::endgroup::"; printf "\\033[32mgreen\\033[0m\\n"; exit 3', "build"), sh("true", "never")],
    artifacts: [{ name: "out.txt", paths: ["out.txt"], when: "always" }],
  });
  const gate = join(stack.dir, "a11y-gate");
  const running = await stack.submit({ name: "a11y-running", steps: [sh(`echo started; while [ ! -f ${gate} ]; do sleep 0.1; done`)] });
  await stack.waitJob(done);
  await stack.waitJob(running, (j) => j.state === "running");
  for (const width of [1280, 360]) {
    await page.setViewportSize({ width, height: 800 });
    await page.goto(`${stack.url}/`);
    await page.locator(`tr[data-job="${done}"]`).waitFor();
    await audit(`/ at ${width}px`);
    await page.goto(`${stack.url}/jobs/${done}`);
    await page.locator(".log-view .row", { hasText: "green" }).waitFor({ timeout: 60_000 });
    await audit(`/jobs/:id (failed) at ${width}px`);
    await page.goto(`${stack.url}/jobs/${running}`);
    await page.locator(".log-view .row", { hasText: "started" }).waitFor({ timeout: 60_000 });
    await audit(`/jobs/:id (running) at ${width}px`);
    await page.goto(`${stack.url}/fleet`);
    await page.getByText("Queue depth").waitFor();
    await audit(`/fleet at ${width}px`);
  }
  await writeFile(gate, "");
  await stack.waitJob(running);
  assert.equal(found.length, 0, found.join("\n"));
  assert.deepEqual(problems, []);
  await page.close();
});

void test("keyboard only: sign in, open a job, fold and unfold a step, scroll a table, sign out", async () => {
  const { page, problems } = await newPage();
  const id = await stack.submit({ name: "keyboard-job", steps: [sh("echo one", "first"), sh("echo two", "second")] });
  await stack.waitJob(id);
  const focused = async () => String(await page.evaluate("(() => { const e = document.activeElement; return e ? `${e.tagName} ${(e.getAttribute('aria-label') || e.textContent || '').trim()}` : '' })()"));
  /** Presses Tab until the focused element's `TAG text` matches. */
  const tabTo = async (what: RegExp) => {
    for (let i = 0; i < 80; i++) {
      await page.keyboard.press("Tab");
      if (what.test(await focused())) return;
    }
    throw new Error(`Tab never reached ${what}; focus is on ${await focused()}`);
  };
  await page.goto(`${stack.url}/login`);
  await tabTo(/^INPUT/);
  await page.keyboard.type(stack.token);
  await page.keyboard.press("Enter");
  await page.waitForURL(`${stack.url}/`);
  await page.locator(`tr[data-job="${id}"]`).waitFor();
  await tabTo(/^A keyboard-job$/);
  await page.keyboard.press("Enter");
  await page.waitForURL(`${stack.url}/jobs/${id}`);
  const fold = page.locator(".log-view button.fold", { hasText: "first" });
  await fold.waitFor({ timeout: 60_000 });
  await tabTo(/^BUTTON .*first/);
  assert.equal(await fold.getAttribute("aria-expanded"), "true");
  await page.keyboard.press("Enter");
  await page.locator(".log-view button.fold[aria-expanded=false]", { hasText: "first" }).waitFor();
  await page.keyboard.press("Space");
  await page.locator(".log-view button.fold[aria-expanded=true]", { hasText: "first" }).waitFor();
  await page.setViewportSize({ width: 360, height: 740 });
  await page.keyboard.press("Shift+Tab");
  await tabTo(/^DIV Attempts table$/);
  const table = page.getByRole("region", { name: "Attempts table" });
  await page.keyboard.press("ArrowRight");
  await page.keyboard.press("End");
  await until("the attempts table scrolled sideways by keyboard", async () => Number(await table.evaluate((e) => e.scrollLeft)) > 0, 10_000);
  await page.setViewportSize({ width: 1280, height: 900 });
  await tabTo(/^BUTTON Sign out$/);
  await page.keyboard.press("Enter");
  await page.waitForURL(`${stack.url}/login`);
  assert.deepEqual(problems, []);
  await page.close();
});
