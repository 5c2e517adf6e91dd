// The overview's charts draw the rates warren-perf makes.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { browser, loggedIn, AMQP_URL } from "./helpers.js";

let b;
before(async () => { b = await browser(); });
after(async () => { await b.close(); });

test("live charts show non-zero rates while warren-perf publishes", async () => {
  const page = await loggedIn(b);
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  const perf = spawn(process.env.WARREN_PERF, ["--url", AMQP_URL, "-z", "15", "-r", "2000", "-q", "100"], { stdio: "ignore" });
  try {
    const rates = page.locator('figure[data-title="Message rates"]');
    await page.waitForFunction(() => {
      const el = document.querySelector('figure[data-title="Message rates"]');
      const last = el && el.dataset.last ? JSON.parse(el.dataset.last) : {};
      // Earlier tests' traffic leaves small non-zero rates: wait for
      // warren-perf's.
      return last.Published > 100 && last.Delivered > 0;
    }, null, { timeout: 30000 });
    const last = JSON.parse(await rates.getAttribute("data-last"));
    assert.ok(last.Published > 100, `published rate ${last.Published}`);
    assert.equal(await rates.locator("canvas").count(), 1, "the chart is drawn");
    const totals = await page.getByRole("region", { name: "Totals" }).innerText();
    const publishRate = Number(totals.match(/Publish rate\s+([\d.]+)\/s/)[1]);
    assert.ok(publishRate > 0, totals);
    assert.match(await page.locator("dd", { hasText: "(RabbitMQ API" }).innerText(), /Warren/);
    if (process.env.WARREN_SCREENSHOTS) {
      await page.screenshot({ path: `${process.env.WARREN_SCREENSHOTS}/overview.png` });
    }
  } finally {
    perf.kill();
  }
  await page.close();
});
