// Dead letters and redrive: reject messages into a dead-letter queue, read
// the decoded x-death in the UI, move them back to the source queue, and
// check with a client that every one arrived once.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { browser, loggedIn, amqpChannel, uniq, UI } from "./helpers.js";

let b;
before(async () => { b = await browser(); });
after(async () => { await b.close(); });

const COUNT = 25;

test("x-death is decoded and moved messages arrive once each", async () => {
  const source = uniq("orders");
  const dlq = source + ".dlq";
  const { conn, ch } = await amqpChannel();
  await ch.assertQueue(dlq, { durable: true });
  await ch.assertQueue(source, { durable: true, arguments: { "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq } });
  for (let i = 0; i < COUNT; i++) ch.sendToQueue(source, Buffer.from(`order-${i}`), { persistent: true });
  await ch.waitForConfirms();
  // A worker that rejects everything: all go to the dead-letter queue.
  const rejected = new Promise((resolve) => {
    let n = 0;
    ch.consume(source, (m) => { ch.nack(m, false, false); if (++n === COUNT) resolve(); });
  });
  await rejected;
  await ch.cancel((await ch.consume(source, () => {})).consumerTag).catch(() => {});
  await ch.close();
  const worker = await conn.createChannel();
  await worker.cancel?.("none").catch(() => {});

  const page = await loggedIn(b);
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  await page.goto(`${UI}/#/queues/%2F/${encodeURIComponent(dlq)}`);
  await page.getByRole("heading", { name: `Queue ${dlq}` }).waitFor();
  const get = page.getByRole("form", { name: "Get messages" });
  await get.getByRole("button", { name: "Get messages" }).click();
  const deaths = get.locator("table.x-death");
  await deaths.waitFor();
  const row = deaths.locator("tbody tr").first();
  const cells = await row.locator("td").allInnerTexts();
  assert.equal(cells[0], "rejected");
  assert.equal(cells[1], source);
  assert.equal(cells[3], source, "routing keys");
  assert.equal(cells[4], "1", "count");
  assert.match(cells[5], /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);

  const move = page.getByRole("form", { name: "Move messages" });
  await move.getByLabel("Named").fill(source);
  await move.getByRole("button", { name: "Move messages" }).click();
  await move.getByText(`Done: moved ${COUNT} messages.`).waitFor({ timeout: 30000 });

  const back = await conn.createChannel();
  const bodies = [];
  await new Promise((resolve) => {
    back.consume(source, (m) => { bodies.push(m.content.toString()); back.ack(m); if (bodies.length === COUNT) resolve(); });
  });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(bodies.length, COUNT);
  assert.equal(new Set(bodies).size, COUNT, "each once");
  assert.equal((await back.checkQueue(dlq)).messageCount, 0);
  await conn.close();
  await page.close();
});
