// Drives the web console in headless Chromium (Debian's, through
// playwright-core; no browser download) and prints what it saw as JSON.
//
// env: CONSOLE_URL, USER_KEY, AUDITOR_KEY, AGENT_KEY, APPROVE_ID, REJECT_ID, TAMPER_ID,
//      EVIL_URL (a page on another origin), ARTIFACTS (screenshot folder)
import { chromium } from "playwright-core";

const env = process.env;
const out = {};
const browser = await chromium.launch({
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
const shot = (name) => page.screenshot({ path: `${env.ARTIFACTS}/${name}.png`, fullPage: true });

try {
  // Agents cannot sign in.
  await page.goto(`${env.CONSOLE_URL}/console/`);
  out.redirectedToLogin = page.url().endsWith("/console/login");
  await page.fill("#key", env.AGENT_KEY);
  await page.click("#signin");
  out.agentRefused = (await page.textContent("body")).includes("does not belong to a user");

  // A user signs in and sees the inbox.
  await page.fill("#key", env.USER_KEY);
  await page.click("#signin");
  await page.waitForSelector("#inbox");
  out.inboxRows = await page.locator("#inbox tr[data-approval]").count();
  out.inboxHasApprove = (await page.locator(`tr[data-approval="${env.APPROVE_ID}"]`).count()) === 1;
  await shot("inbox");

  // The approval page shows the diff, masked request and hash; approve it.
  await page.goto(`${env.CONSOLE_URL}/console/approvals/${env.APPROVE_ID}`);
  out.diff = await page.textContent("#diff");
  out.hashShown = (await page.textContent("#request-hash")).startsWith("sha256:");
  out.requestMasked = (await page.textContent("pre.request")).includes("[credential:crm]");
  out.invisibleShown = (await page.locator(".invisible").count()) > 0;
  out.agentMarked = (await page.locator(".agent-text .tag").count()) > 0;
  await shot("approval");
  await page.fill("#comment", "Looks right");
  await page.click("#approve");
  await page.waitForSelector(".alert.ok");
  out.flash = await page.textContent(".alert.ok");
  // Watch the action reach succeeded.
  const actionLink = await page.getAttribute("dd a[href^='/console/actions/']", "href");
  let status = "";
  for (let i = 0; i < 40 && status !== "succeeded"; i++) {
    await page.goto(`${env.CONSOLE_URL}${actionLink}`);
    status = (await page.textContent("#action-status")).trim();
    if (status !== "succeeded") await page.waitForTimeout(250);
  }
  out.finalStatus = status;
  out.timeline = await page.textContent("#timeline");
  await shot("action");

  // Reject flow.
  await page.goto(`${env.CONSOLE_URL}/console/approvals/${env.REJECT_ID}`);
  await page.fill("#comment", "Not needed");
  await page.click("#reject");
  await page.waitForSelector(".alert.ok");
  out.rejectedStatus = (await page.textContent("#approval-status")).trim();

  // A request that changed since the page was opened (here: a stale hash).
  await page.goto(`${env.CONSOLE_URL}/console/approvals/${env.TAMPER_ID}`);
  await page.evaluate(() => { document.querySelector("input[name=request_hash]").value = "sha256:stale"; });
  await page.click("#approve");
  await page.waitForSelector(".alert.error");
  out.changedMessage = await page.textContent(".alert.error");
  await shot("changed");

  await page.goto(`${env.CONSOLE_URL}/console/tasks`);
  out.tasksPage = await page.locator("section.task").count();

  // CSRF: a page on another origin posts an approval with the victim's session.
  const resp = await page.goto(`${env.EVIL_URL}/?target=${encodeURIComponent(`${env.CONSOLE_URL}/console/approvals/${env.TAMPER_ID}/decide`)}`);
  await page.waitForLoadState("load");
  await page.waitForTimeout(500);
  out.csrfLandedOn = page.url();
  out.csrfBody = (await page.textContent("body")).slice(0, 200);
  // An auditor's view: the audit page and its verify button.
  const auditor = await browser.newPage();
  await auditor.goto(`${env.CONSOLE_URL}/console/login`);
  await auditor.fill("#key", env.AUDITOR_KEY);
  await auditor.click("#signin");
  await auditor.goto(`${env.CONSOLE_URL}/console/audit`);
  await auditor.click("#verify");
  await auditor.waitForSelector("#verify-result");
  out.verify = await auditor.textContent("#verify-result");
  await auditor.screenshot({ path: `${env.ARTIFACTS}/audit.png`, fullPage: true });
} catch (e) {
  out.error = String(e);
  await shot("failure").catch(() => {});
}
await browser.close();
console.log(JSON.stringify(out));
