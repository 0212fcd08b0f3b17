// Drives Debian's headless Chromium through Rempart's challenge to the origin page.
// Usage: node challenge.mjs URL js|nojs EXPECTED_TEXT SCREENSHOT_PREFIX [HOST_RULE]
// Prints one JSON line: {"ok":bool,"ms":elapsed,"url":final,"challenge_seen":bool,...}.
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const [url, mode, expected, shotPrefix, hostRule] = process.argv.slice(2);
const args = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
if (hostRule) args.push(`--host-resolver-rules=${hostRule}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args,
});
const result = { ok: false, mode };
try {
  const context = await browser.newContext({
    javaScriptEnabled: mode !== "nojs",
    locale: "fr-FR",
  });
  const page = await context.newPage();
  let challengeSeen = false;
  page.on("response", (r) => {
    if (r.headers()["x-rempart-challenge"]) challengeSeen = true;
  });
  const started = Date.now();
  // The first answer is the challenge page; the script may solve it and move on before the
  // page can be inspected, so its title is read from the response itself.
  const first = await page.goto(url, { waitUntil: "commit" });
  challengeSeen = challengeSeen || Boolean(first && first.headers()["x-rempart-challenge"]);
  let firstHtml = first ? await first.text().catch(() => "") : "";
  // Accessibility audit (axe-core) of the challenge page as served, without its script (which
  // would solve the challenge and leave the page), in a context that lets axe run. The page is
  // fetched again by a page without JavaScript: the first answer's body may be gone already
  // when the script solved the challenge and navigated before it could be read.
  if (mode === "js") {
    const fetchContext = await browser.newContext({ javaScriptEnabled: false, locale: "fr-FR" });
    const served = await (await fetchContext.newPage()).goto(url, { waitUntil: "commit" });
    const auditHtml = served ? await served.text() : "";
    await fetchContext.close();
    if (!firstHtml) firstHtml = auditHtml;
    const auditContext = await browser.newContext({ bypassCSP: true, locale: "fr-FR" });
    const audit = await auditContext.newPage();
    await audit.setContent(auditHtml.replace(/<script[^>]*><\/script>/g, ""));
    await audit.addScriptTag({ path: createRequire(import.meta.url).resolve("axe-core/axe.min.js") });
    const axe = await audit.evaluate(async () => {
      const r = await window.axe.run(document, { runOnly: ["wcag2a", "wcag2aa", "wcag21aa", "best-practice"] });
      return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length }));
    });
    result.axe_violations = axe;
    await auditContext.close();
  }
  const m = firstHtml.match(/<title>([^<]*)<\/title>/);
  result.challenge_title = m ? m[1] : "";
  if (mode === "nojs") await page.waitForLoadState("domcontentloaded");
  await page.screenshot({ path: `${shotPrefix}-challenge.png` }).catch(() => {});
  await page.waitForFunction(
    (text) => document.body && document.body.innerText.includes(text),
    expected,
    { timeout: 20000, polling: 50 },
  );
  result.ms = Date.now() - started;
  result.url = page.url();
  result.challenge_seen = challengeSeen;
  result.cookies = (await context.cookies()).map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite }));
  await page.screenshot({ path: `${shotPrefix}-origin.png` });
  // A second visit goes straight through with the pass.
  challengeSeen = false;
  await page.goto(url, { waitUntil: "domcontentloaded" });
  result.second_visit_challenged = challengeSeen;
  result.second_visit_text = (await page.innerText("body")).slice(0, 80);
  result.ok = true;
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
