// Delayed messages: listed on their exchange's page and cancelled there.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { browser, loggedIn, amqpChannel, api, uniq, UI } from "./helpers.js";

let b;
before(async () => { b = await browser(); });
after(async () => { await b.close(); });

test("a delayed message is shown and cancelled", async () => {
  const exchange = uniq("later");
  const { conn, ch } = await amqpChannel();
  await ch.assertExchange(exchange, "x-delayed-message", { durable: true, arguments: { "x-delayed-type": "direct" } });
  ch.publish(exchange, "k", Buffer.from("remind me"), { persistent: true, headers: { "x-delay": 600000 } });
  await ch.waitForConfirms();

  const page = await loggedIn(b);
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  await page.goto(`${UI}/#/exchanges/%2F/${encodeURIComponent(exchange)}`);
  const section = page.getByRole("region", { name: "Delayed messages" });
  await section.getByText("remind me").waitFor();
  await section.getByRole("heading", { name: "Delayed messages (1)" }).waitFor();
  await section.getByRole("button", { name: /^Cancel message/ }).click();
  await section.getByText("No delayed messages.").waitFor();
  assert.deepEqual(await api("GET", `/exchanges/%2F/${exchange}/delayed`), []);
  await conn.close();
  await page.close();
});
