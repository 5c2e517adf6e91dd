// Connections: a client's connection shows its properties, channels and
// the messages its consumer holds unacked (also on the queue's page);
// closing it with a reason tells the client that reason.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import amqp from "amqplib";
import { browser, loggedIn, api, AMQP_URL, uniq } from "./helpers.js";

let b;
before(async () => { b = await browser(); });
after(async () => { await b.close(); });

test("see who holds unacked messages, then close the connection with a reason", async () => {
  const appName = uniq("billing-worker");
  const conn = await amqp.connect(AMQP_URL, { clientProperties: { connection_name: appName } });
  // amqplib reports a 320 CONNECTION_FORCED on "close", not "error".
  const closed = new Promise((resolve) => conn.on("close", resolve));
  const ch = await conn.createChannel();
  const queue = uniq("invoices");
  await ch.assertQueue(queue, { durable: false });
  await ch.prefetch(5);
  let received = 0;
  await ch.consume(queue, () => { received++; }, { consumerTag: "invoice-printer" });
  for (let i = 0; i < 8; i++) ch.sendToQueue(queue, Buffer.from(`invoice ${i}`), { messageId: `inv-${i}` });
  while (received < 5) await new Promise((r) => setTimeout(r, 50));

  const page = await loggedIn(b);
  await page.getByRole("link", { name: "Connections" }).click();
  const mine = (await api("GET", "/connections")).find((c) => c.client_properties.connection_name === appName);
  await page.getByRole("link", { name: mine.name }).click();
  await page.getByRole("region", { name: "Client properties" }).getByText(appName).waitFor();
  const channels = page.getByRole("region", { name: "Channels" });
  await channels.getByRole("cell", { name: "5", exact: true }).first().waitFor();
  const unacked = page.getByRole("region", { name: "Unacked messages" });
  await unacked.getByText("5 unacked, held by:").waitFor();
  const holder = unacked.locator("table.holders tbody tr");
  assert.equal(await holder.count(), 1);
  assert.match(await holder.textContent(), /invoice-printer.*5/);
  await unacked.getByRole("cell", { name: "inv-0" }).waitFor();
  if (process.env.WARREN_SCREENSHOTS) {
    await page.screenshot({ path: `${process.env.WARREN_SCREENSHOTS}/connection.png`, fullPage: true });
  }

  // The queue's page shows the same holder.
  await page.goto(page.url().replace(/#.*$/, `#/queues/%2F/${queue}`));
  await page.getByRole("region", { name: "Unacked messages" }).getByRole("cell", { name: "invoice-printer" }).first().waitFor();

  await page.goto(page.url().replace(/#.*$/, "#/connections/" + encodeURIComponent(mine.name)));
  const close = page.getByRole("form", { name: "Close this connection" });
  await close.getByLabel("Reason").fill("maintenance window");
  page.on("dialog", (d) => d.accept());
  await close.getByRole("button", { name: "Close connection" }).click();
  const err = await closed;
  assert.match(err.message, /CONNECTION_FORCED - maintenance window/);
  await page.getByRole("heading", { name: "Connections" }).waitFor();
  // Its unacked messages went back: all 8 wait in the queue.
  let q;
  for (let i = 0; i < 50; i++) {
    q = await api("GET", `/queues/%2F/${queue}`);
    if (q.messages_ready === 8) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(q.messages_ready, 8);
  await page.close();
});
