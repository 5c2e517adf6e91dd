// Warren's management UI: a hash router over pages, each a module that
// renders into <main> with what the public HTTP API returns. The
// credentials are the broker's users (HTTP basic auth, as the API); they
// stay in this tab's sessionStorage only.

import { h, clear, toast } from "./dom.js";
import { overview } from "./pages/overview.js";
import { queues } from "./pages/queues.js";
import { queue } from "./pages/queue.js";
import { exchanges, exchange } from "./pages/exchanges.js";
import { shovels } from "./pages/shovels.js";
import { connections, connection, channels } from "./pages/connections.js";
import { users } from "./pages/admin.js";
import { vhosts, limits } from "./pages/vhosts.js";
import { policies, definitions } from "./pages/policies.js";

const KEY = "warren.auth";

/** Call the API: JSON in, JSON out; throws an Error with the API's reason. */
export async function api(method, path, body, headers = {}) {
  const auth = sessionStorage.getItem(KEY);
  const init = { method, headers: { ...headers, authorization: "Basic " + auth } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch("/api" + path, init);
  if (res.status === 401) {
    logout("Your session has ended: log in again.");
    throw new Error("not logged in");
  }
  const text = await res.text();
  const json = text ? JSON.parse(text) : null;
  if (!res.ok) {
    throw new Error((json && json.reason) || res.status + " " + res.statusText);
  }
  return json;
}

/** A vhost or name as a path segment. */
export const seg = (s) => encodeURIComponent(s);

function logout(message) {
  sessionStorage.removeItem(KEY);
  location.hash = "#/login";
  if (message) toast(message);
}

async function login(user, password) {
  const auth = btoa(unescape(encodeURIComponent(user + ":" + password)));
  const res = await fetch("/api/whoami", { headers: { authorization: "Basic " + auth } });
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    throw new Error(body.reason || "Login failed");
  }
  const me = await res.json();
  const tags = Array.isArray(me.tags) ? me.tags : String(me.tags || "").split(",");
  if (!tags.some((t) => ["management", "policymaker", "monitoring", "administrator"].includes(t))) {
    throw new Error("User " + me.name + " has no management tag and may not use the UI");
  }
  sessionStorage.setItem(KEY, auth);
  sessionStorage.setItem(KEY + ".user", me.name);
  // Already at "#/" (a tab opened there): no hashchange would come.
  if (location.hash === "#/") route();
  else location.hash = "#/";
}

function loginPage(main) {
  const user = h("input", { id: "user", name: "user", autocomplete: "username", required: true });
  const pass = h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password" });
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "login card" },
    h("h1", {}, "Log in to Warren"),
    h("label", { for: "user" }, "Username"), user,
    h("label", { for: "password" }, "Password"), pass,
    h("button", { type: "submit" }, "Log in"), error);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    try {
      await login(user.value, pass.value);
    } catch (err) {
      error.textContent = err.message;
    }
  });
  main.append(form);
  user.focus();
}

const routes = [
  [/^#\/$/, overview],
  [/^#\/queues$/, queues],
  [/^#\/queues\/([^/]+)\/([^/]+)$/, queue],
  [/^#\/exchanges$/, exchanges],
  [/^#\/exchanges\/([^/]+)\/([^/]+)$/, exchange],
  [/^#\/shovels$/, shovels],
  [/^#\/connections$/, connections],
  [/^#\/connections\/([^/]+)$/, connection],
  [/^#\/channels$/, channels],
  [/^#\/admin(?:\/users)?$/, users],
  [/^#\/admin\/vhosts$/, vhosts],
  [/^#\/admin\/policies$/, policies],
  [/^#\/admin\/limits$/, limits],
  [/^#\/admin\/definitions$/, definitions],
];

/** Stops the current page's timers when another page is shown. */
let leave = () => {};
/** Counts pages shown: a page still loading when another is shown must
 * neither draw over it nor keep its timers. */
let shown = 0;

async function route() {
  const mine = ++shown;
  leave();
  leave = () => {};
  const root = document.getElementById("main");
  clear(root);
  // Each page draws into its own element: one left behind draws into a
  // detached one.
  const main = h("div", {});
  root.append(main);
  const hash = location.hash || "#/";
  const loggedIn = !!sessionStorage.getItem(KEY);
  document.getElementById("nav").hidden = !loggedIn;
  const who = document.getElementById("who");
  clear(who);
  if (!loggedIn || hash === "#/login") {
    if (loggedIn) sessionStorage.removeItem(KEY);
    return loginPage(main);
  }
  const out = h("button", { class: "link", type: "button" }, "Log out");
  out.addEventListener("click", () => logout());
  who.append(sessionStorage.getItem(KEY + ".user") || "", " ", out);
  for (const a of document.querySelectorAll("#nav a")) {
    const target = a.getAttribute("href");
    a.classList.toggle("active", target === "#/" ? hash === "#/" : hash.startsWith(target));
  }
  for (const [pattern, page] of routes) {
    const m = hash.match(pattern);
    if (m) {
      const args = m.slice(1).map(decodeURIComponent);
      let stop = () => {};
      try {
        stop = (await page(main, ...args)) || (() => {});
      } catch (err) {
        main.append(h("p", { class: "error", role: "alert" }, err.message));
      }
      if (mine === shown) leave = stop;
      else stop();
      return;
    }
  }
  main.append(h("p", {}, "No such page."));
}

window.addEventListener("hashchange", route);
route();
