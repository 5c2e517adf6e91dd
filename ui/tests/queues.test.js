// Queues: add one in the UI, bind it, publish to it and get the message
// back, all as a person would; the list pages on the server.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { browser, loggedIn, api, uniq } from "./helpers.js";

let b;
before(async () => { b = await browser(); });
after(async () => { await b.close(); });

test("add a queue, bind it, publish and get the message back", async () => {
  const page = await loggedIn(b);
  await page.getByRole("link", { name: "Queues" }).click();
  const name = uniq("ui-orders");
  const form = page.getByRole("form", { name: "Add a queue" });
  await form.getByLabel("Name").fill(name);
  await form.getByRole("button", { name: "Add queue" }).click();
  await page.getByRole("link", { name }).click();
  await page.getByRole("heading", { name: `Queue ${name}` }).waitFor();

  const bind = page.getByRole("form", { name: "Add a binding" });
  await bind.getByLabel("From exchange").fill("amq.direct");
  await bind.getByLabel("Routing key").fill("orders.new");
  await bind.getByRole("button", { name: "Bind" }).click();
  const bindings = page.getByRole("region", { name: "Bindings" });
  await bindings.getByRole("cell", { name: "orders.new" }).waitFor();

  const publish = page.getByRole("form", { name: "Publish a message" });
  await publish.getByLabel("Payload").fill("order #42");
  await publish.getByRole("button", { name: "Publish" }).click();
  await page.getByText("Message published").waitFor();

  const get = page.getByRole("form", { name: "Get messages" });
  await get.getByRole("button", { name: "Get messages" }).click();
  await get.getByText("order #42").waitFor();
  // Looked at, requeued: still in the queue.
  const q = await api("GET", `/queues/%2F/${name}`);
  assert.equal(q.messages_ready + q.messages_unacknowledged, 1);
  // The queue's chart draws the message waiting (sampled every 5 s).
  const queued = page.locator('figure[data-title="Queued messages"]');
  await page.waitForFunction((el) => JSON.parse(el.dataset.last || "{}").Ready === 1,
    await queued.elementHandle(), { timeout: 15000 });
  if (process.env.WARREN_SCREENSHOTS) {
    await page.screenshot({ path: `${process.env.WARREN_SCREENSHOTS}/queue.png`, fullPage: true });
  }
  await page.close();
});

test("the queue list shows a page of many queues, filtered on the server", async () => {
  const prefix = uniq("many");
  for (let i = 0; i < 120; i++) {
    await api("PUT", `/queues/%2F/${prefix}-${String(i).padStart(3, "0")}`, { durable: false });
  }
  const page = await loggedIn(b);
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  await page.goto(page.url().replace(/#.*$/, "#/queues"));
  await page.getByRole("searchbox", { name: "Filter queues by name" }).fill(prefix);
  await page.getByText(/\(120 of \d+ queues\)/).waitFor();
  assert.equal(await page.locator("#queue-list tbody tr").count(), 50);
  await page.getByRole("button", { name: "Next" }).click();
  await page.getByText(/Page 2 of 3/).waitFor();
  await page.getByRole("link", { name: `${prefix}-050` }).waitFor();
  await page.close();
});
