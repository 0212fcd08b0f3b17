// Opens Rempart's own pages (status page, fallback and maintenance pages) in Debian's
// headless Chromium, with JavaScript off (they must work without it), audits each with
// axe-core (WCAG 2.1 A/AA + best practices), checks the first keyboard stop, follows the
// language switch when there is one, and takes screenshots.
// Usage: node pages.mjs HOST_RULE SHOT_DIR NAME=URL [NAME=URL ...]
// Prints one JSON line: {"ok":bool,"pages":[{name,status,lang,title,violations,...}]}.
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const [hostRule, shotDir, ...targets] = process.argv.slice(2);
const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    `--host-resolver-rules=${hostRule}`,
  ],
});
const result = { ok: false, pages: [] };

async function audit(html) {
  // The pages forbid scripts (CSP); axe runs on a copy in a context that allows it.
  const ctx = await browser.newContext({ bypassCSP: true, locale: "fr-FR" });
  const p = await ctx.newPage();
  await p.setContent(html);
  await p.addScriptTag({ path: axePath });
  const v = await p.evaluate(async () => {
    const r = await window.axe.run(document, { runOnly: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] });
    return r.violations.map((x) => ({ id: x.id, impact: x.impact, nodes: x.nodes.length, help: x.help }));
  });
  await ctx.close();
  return v;
}

try {
  const context = await browser.newContext({ javaScriptEnabled: false, locale: "fr-FR" });
  for (const t of targets) {
    const [name, url] = t.split(/=(.*)/s);
    const page = await context.newPage();
    const resp = await page.goto(url, { waitUntil: "load" });
    const html = await page.content();
    const info = {
      name,
      status: resp ? resp.status() : 0,
      lang: await page.evaluate(() => document.documentElement.lang),
      title: await page.title(),
      text: (await page.innerText("body")).slice(0, 2000),
      bytes: resp ? (await resp.body()).length : 0,
      violations: await audit(html),
    };
    await page.screenshot({ path: `${shotDir}/${name}.png`, fullPage: true });
    await page.keyboard.press("Tab");
    info.first_focus = await page.evaluate(() => (document.activeElement ? document.activeElement.textContent.trim() : ""));
    const switcher = await page.$("a[hreflang]");
    if (switcher) {
      await Promise.all([page.waitForNavigation({ waitUntil: "load" }), switcher.click()]);
      info.switched_lang = await page.evaluate(() => document.documentElement.lang);
      info.switched_title = await page.title();
      info.switched_violations = await audit(await page.content());
      await page.screenshot({ path: `${shotDir}/${name}-${info.switched_lang}.png`, fullPage: true });
    }
    result.pages.push(info);
    await page.close();
  }
  result.ok = true;
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
