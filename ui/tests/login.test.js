// Logging in with the broker's users: the management tag rules apply.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { browser, loggedIn, api, uniq } from "./helpers.js";

let b;
before(async () => { b = await browser(); });
after(async () => { await b.close(); });

test("guest logs in and sees the overview", async () => {
  const page = await loggedIn(b);
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  assert.match(await page.locator("#who").innerText(), /guest/);
  assert.equal(await page.getByRole("link", { name: "Admin" }).isVisible(), true);
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByRole("heading", { name: "Log in to Warren" }).waitFor();
  // Logged out, the pages' links are gone (a click there used to race the
  // login and land on the overview).
  assert.equal(await page.getByRole("link", { name: "Admin" }).isVisible(), false);
  await page.close();
});

test("a wrong password is refused with a message", async () => {
  const page = await loggedIn(b, "guest", "wrong");
  const alert = page.getByRole("alert");
  await alert.waitFor();
  assert.notEqual((await alert.innerText()).trim(), "");
  assert.equal(await page.getByRole("heading", { name: "Overview" }).count(), 0);
  assert.equal(await page.getByRole("link", { name: "Queues" }).isVisible(), false);
  await page.close();
});

test("a user without the management tag is refused", async () => {
  const user = uniq("app");
  await api("PUT", `/users/${user}`, { password: user, tags: "" });
  await api("PUT", `/permissions/%2F/${user}`, { configure: ".*", write: ".*", read: ".*" });
  const page = await loggedIn(b, user, user);
  const alert = page.getByRole("alert");
  await alert.waitFor();
  assert.match(await alert.innerText(), /management/);
  assert.equal(await page.getByRole("heading", { name: "Overview" }).count(), 0);
  await page.close();
});

test("the UI works from the keyboard alone", async () => {
  const page = await b.newPage({ viewport: { width: 1366, height: 900 } });
  await page.goto(process.env.WARREN_UI_URL + "/");
  // The username field has the focus; Tab moves on, Enter submits.
  await page.getByLabel("Username").waitFor();
  await page.keyboard.type("guest");
  await page.keyboard.press("Tab");
  await page.keyboard.type("guest");
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  let focused = "";
  for (let i = 0; i < 12 && focused !== "Queues"; i++) {
    await page.keyboard.press("Tab");
    focused = await page.evaluate(() => document.activeElement?.textContent?.trim() || "");
  }
  assert.equal(focused, "Queues", "the Queues link is reached with Tab");
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Queues" }).waitFor();
  await page.close();
});

test("with a slow API, the page clicked is the page shown", async () => {
  // Each API answer held back up to 1 s: the links appear only once the
  // login is through, and a page left while loading does not draw later.
  const page = await b.newPage({ viewport: { width: 1366, height: 900 } });
  await page.route("**/api/**", async (route) => {
    await new Promise((r) => setTimeout(r, 200 + Math.random() * 800));
    await route.continue();
  });
  await page.goto(process.env.WARREN_UI_URL + "/");
  await page.getByLabel("Username").fill("guest");
  await page.getByLabel("Password").fill("guest");
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("link", { name: "Admin" }).click();
  await page.getByRole("link", { name: "Policies" }).click();
  await page.getByRole("heading", { name: "Policies", exact: true }).waitFor();
  await page.getByRole("link", { name: "Queues" }).click();
  await page.getByRole("heading", { name: "Queues" }).waitFor();
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(await page.evaluate(() => location.hash), "#/queues");
  assert.equal(await page.getByRole("heading", { name: "Policies", exact: true }).count(), 0);
  assert.equal(await page.getByRole("heading", { name: "Overview" }).count(), 0);
  await page.close();
});
