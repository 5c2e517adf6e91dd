// Admin pages: create a user (who can then log in) and a policy (which a
// queue then shows and obeys); add a vhost with a limit; download and
// upload definitions.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFile, writeFile, mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { browser, loggedIn, api, amqpChannel, uniq } from "./helpers.js";

let b;
before(async () => { b = await browser(); });
after(async () => { await b.close(); });

test("create a user who can then log in", async () => {
  const page = await loggedIn(b);
  await page.getByRole("link", { name: "Admin" }).click();
  const name = uniq("ops");
  const form = page.getByRole("form", { name: "Add or update a user" });
  await form.getByLabel("Username").fill(name);
  await form.getByLabel(/^Password/).fill("s3cret-pw");
  await form.getByLabel(/^Tags/).fill("management");
  await form.getByRole("button", { name: "Save user" }).click();
  const row = page.getByRole("table", { name: "Users" }).getByRole("row").filter({ hasText: name });
  await row.getByRole("cell", { name: "management", exact: true }).waitFor();

  const perms = page.getByRole("form", { name: "Set permissions" });
  await perms.getByLabel("User").fill(name);
  await perms.getByRole("button", { name: "Set permissions" }).click();
  await page.getByRole("table", { name: "Permissions" }).getByRole("row").filter({ hasText: name }).waitFor();
  await page.close();

  const theirs = await loggedIn(b, name, "s3cret-pw");
  await theirs.getByRole("heading", { name: "Overview" }).waitFor();
  await theirs.getByText(name).first().waitFor();
  await theirs.close();
  const wrong = await loggedIn(b, name, "not-it");
  await wrong.getByRole("alert").filter({ hasText: /./ }).waitFor();
  assert.equal(await wrong.getByRole("heading", { name: "Overview" }).count(), 0);
  await wrong.close();
});

test("create a policy that a queue then shows and obeys", async () => {
  const page = await loggedIn(b);
  await page.getByRole("link", { name: "Admin" }).click();
  await page.getByRole("link", { name: "Policies" }).click();
  const prefix = uniq("capped");
  const form = page.getByRole("form", { name: "Add or replace a policy" });
  await form.getByLabel("Name").fill(prefix + "-policy");
  await form.getByLabel("Pattern").fill(`^${prefix}-`);
  await form.getByLabel("Apply to").selectOption("queues");
  await form.getByLabel("Definition (JSON)").fill('{"max-length": 2}');
  await form.getByRole("button", { name: "Save policy" }).click();
  await page.getByRole("table", { name: "Policies" }).getByRole("cell", { name: prefix + "-policy", exact: true }).waitFor();

  const queue = prefix + "-q";
  const { conn, ch } = await amqpChannel();
  await ch.assertQueue(queue, { durable: false });
  for (let i = 0; i < 5; i++) ch.sendToQueue(queue, Buffer.from(`m${i}`));
  await ch.waitForConfirms();
  await conn.close();
  await page.goto(page.url().replace(/#.*$/, `#/queues/%2F/${queue}`));
  const args = page.getByRole("region", { name: "Arguments and policy" });
  await args.getByText(prefix + "-policy").waitFor();
  await args.getByText("policy: max-length").waitFor();
  const details = page.getByRole("region", { name: "Details" });
  assert.equal(await details.locator("dt:has-text('Ready') + dd").textContent(), "2");
  await page.close();
});

test("add a vhost with a limit, download and upload definitions", async () => {
  const page = await loggedIn(b);
  await page.getByRole("link", { name: "Admin" }).click();
  await page.getByRole("link", { name: "Virtual hosts" }).click();
  const vhost = uniq("tenant");
  const add = page.getByRole("form", { name: "Add a virtual host" });
  await add.getByLabel("Name").fill(vhost);
  await add.getByRole("button", { name: "Add vhost" }).click();
  await page.getByRole("table", { name: "Virtual hosts" }).getByRole("cell", { name: vhost, exact: true }).waitFor();

  await page.getByRole("link", { name: "Limits" }).click();
  const limit = page.getByRole("form", { name: "Set a vhost limit" });
  await limit.getByLabel("Vhost").fill(vhost);
  await limit.getByLabel("Limit").selectOption("max-queues");
  await limit.getByLabel("Value").fill("3");
  await limit.getByRole("button", { name: "Set limit" }).click();
  await page.getByRole("row").filter({ hasText: vhost }).filter({ hasText: "max-queues" }).waitFor();
  const limits = await api("GET", `/vhost-limits/${encodeURIComponent(vhost)}`);
  assert.equal(limits[0].value["max-queues"], 3);

  await page.getByRole("link", { name: "Definitions" }).click();
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download definitions" }).click(),
  ]);
  const dir = await mkdtemp(join(tmpdir(), "warren-defs-"));
  const file = join(dir, "defs.json");
  await download.saveAs(file);
  const defs = JSON.parse(await readFile(file, "utf8"));
  assert.ok(defs.vhosts.some((v) => v.name === vhost), "the new vhost is in the download");

  const imported = uniq("imported");
  await writeFile(file, JSON.stringify({
    queues: [{ name: imported, vhost: "/", durable: true, auto_delete: false, arguments: {} }],
  }));
  await page.getByLabel("Definitions file").setInputFiles(file);
  await page.getByRole("button", { name: "Upload definitions" }).click();
  await page.getByText("Definitions imported").waitFor();
  const q = await api("GET", `/queues/%2F/${imported}`);
  assert.equal(q.durable, true);
  await page.close();
});
