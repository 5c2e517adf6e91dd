// The UI in Firefox (Debian's firefox-esr, driven by puppeteer-core over
// WebDriver BiDi; playwright-core needs its own patched Firefox build): a
// person logs in, sees the overview's charts, finds a queue in the list,
// opens it and reads its messages' count, opens the admin pages, logs
// out. Skipped when no Firefox is installed (FIREFOX unset).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import puppeteer from "puppeteer-core";
import { UI, amqpChannel, uniq } from "./helpers.js";

const FIREFOX = process.env.FIREFOX;
let browser;
before(async () => {
  if (FIREFOX) browser = await puppeteer.launch({ browser: "firefox", executablePath: FIREFOX, headless: true });
});
after(async () => { if (browser) await browser.close(); });

/** Wait until the page's text in `selector` matches `re`. */
async function seeText(page, selector, re) {
  await page.waitForFunction(
    (sel, src) => [...document.querySelectorAll(sel)].some((e) => new RegExp(src).test(e.textContent)),
    { timeout: 15000 }, selector, re.source,
  );
}

test("the UI in Firefox: log in, overview, a queue, admin, log out", { skip: !FIREFOX && "FIREFOX not set" }, async () => {
  const queue = uniq("firefox");
  const { conn, ch } = await amqpChannel();
  await ch.assertQueue(queue, { durable: false });
  for (let i = 0; i < 3; i++) ch.sendToQueue(queue, Buffer.from(`m${i}`));
  await ch.waitForConfirms();
  await conn.close();

  const page = await browser.newPage();
  await page.setViewport({ width: 1366, height: 900 });
  await page.goto(UI + "/");
  // Logged out: the login form, and no page links.
  await page.waitForSelector("#user");
  assert.equal(await page.$eval("#nav", (n) => getComputedStyle(n).display), "none");
  await page.type("#user", "guest");
  await page.type("#password", "guest");
  await page.click("form.login button[type=submit]");

  // The overview: its heading, two charts drawn, the node's facts.
  await seeText(page, "main h1", /^Overview$/);
  await page.waitForFunction(() => document.querySelectorAll("figure.chart canvas").length >= 2, { timeout: 15000 });
  await seeText(page, "section[aria-label=Node]", /Version/);

  // The queue list, filtered to our queue; then its page.
  await page.click("#nav a[href='#/queues']");
  await page.waitForSelector("input[type=search]");
  await page.type("input[type=search]", queue);
  await seeText(page, "#queue-list a", new RegExp(`^${queue}$`));
  await page.click(`#queue-list a[href$='/${queue}']`);
  await seeText(page, "main h1", new RegExp(`Queue ${queue}`));
  await page.waitForFunction(() => {
    const dt = [...document.querySelectorAll("section[aria-label=Details] dt")].find((d) => d.textContent === "Ready");
    return dt && dt.nextElementSibling && dt.nextElementSibling.textContent === "3";
  }, { timeout: 15000 });

  // The admin pages: users (guest among them), then policies.
  await page.click("#nav a[href='#/admin']");
  await seeText(page, "table[aria-label=Users] td", /^guest$/);
  await page.click("nav.tabs a[href='#/admin/policies']");
  await seeText(page, "main h1", /^Policies$/);

  // Log out: the login form again, the links hidden.
  await page.click("#who button");
  await seeText(page, "main h1", /^Log in to Warren$/);
  assert.equal(await page.$eval("#nav", (n) => getComputedStyle(n).display), "none");
  await page.close();
});
