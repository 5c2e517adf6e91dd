// What the browser tests share: a chromium page logged in to Warren's UI,
// the management API and an AMQP client for setting up and checking.

import { chromium } from "playwright-core";
import amqp from "amqplib";

export const UI = process.env.WARREN_UI_URL;
export const AMQP_URL = process.env.AMQP_URL;
const AUTH = "Basic " + Buffer.from("guest:guest").toString("base64");

/** A fresh browser; close it with `browser.close()`. */
export async function browser() {
  return chromium.launch({ executablePath: process.env.CHROMIUM, args: ["--no-sandbox"] });
}

/** A page logged in as `user` (default guest). */
export async function loggedIn(b, user = "guest", password = "guest") {
  const page = await b.newPage({ viewport: { width: 1366, height: 900 } });
  await page.goto(UI + "/");
  await page.getByLabel("Username").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  // Logged in (the overview) or refused (an alert with a reason).
  const overview = page.getByRole("heading", { name: "Overview" });
  await overview.or(page.getByRole("alert").filter({ hasText: /./ })).first().waitFor();
  return page;
}

/** A management API request as guest: the parsed body (null if none). */
export async function api(method, path, body) {
  const init = { method, headers: { authorization: AUTH } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(UI + "/api" + path, init);
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

/** An AMQP connection and a confirm channel. */
export async function amqpChannel() {
  const conn = await amqp.connect(AMQP_URL);
  const ch = await conn.createConfirmChannel();
  return { conn, ch };
}

/** A name unique to this run. */
export const uniq = (p) => `${p}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
