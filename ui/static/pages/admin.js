// Admin: the tabs over users and permissions, virtual hosts and limits,
// policies, and definitions; this file owns the tabs and the users page.

import { api, seg } from "../app.js";
import { h, table, field, toast, formCard, action } from "../dom.js";

const TABS = [
  ["#/admin/users", "Users"],
  ["#/admin/vhosts", "Virtual hosts"],
  ["#/admin/policies", "Policies"],
  ["#/admin/limits", "Limits"],
  ["#/admin/definitions", "Definitions"],
];

/** The admin tabs, the current one marked. */
export function tabs(current) {
  return h("nav", { class: "tabs", "aria-label": "Admin" }, TABS.map(([href, label]) =>
    h("a", { href, "aria-current": href === current ? "page" : null }, label)));
}

/** Users with their tags, add or update one (password, tags), delete one;
 * permissions of every user in every vhost, set and clear. */
export async function users(main) {
  const userList = h("div", {});
  const permList = h("div", {});
  main.append(tabs("#/admin/users"), h("h1", {}, "Users"), userList, userForm(load),
    h("h2", {}, "Permissions"), permList, permissionForm(load));
  async function load() {
    const [us, ps] = await Promise.all([api("GET", "/users"), api("GET", "/permissions")]);
    userList.replaceChildren(table([
      ["Name", (u) => u.name],
      ["Tags", (u) => tagList(u.tags) || "(none)"],
      ["Password", (u) => (u.password_hash ? "set" : "none")],
      ["", (u) => action("Delete", async () => {
        if (!confirm(`Delete user ${u.name}?`)) return;
        await api("DELETE", "/users/" + seg(u.name));
        toast(`User ${u.name} deleted`);
        await load();
      }, { "aria-label": "Delete user " + u.name })],
    ], us, { class: "list", "aria-label": "Users" }));
    permList.replaceChildren(table([
      ["User", (p) => p.user], ["Vhost", (p) => p.vhost],
      ["Configure", (p) => p.configure], ["Write", (p) => p.write], ["Read", (p) => p.read],
      ["", (p) => action("Clear", async () => {
        await api("DELETE", `/permissions/${seg(p.vhost)}/${seg(p.user)}`);
        toast(`Permissions of ${p.user} in ${p.vhost} cleared`);
        await load();
      })],
    ], ps, { class: "list", "aria-label": "Permissions" }));
  }
  await load();
}

const tagList = (tags) => (Array.isArray(tags) ? tags.join(", ") : tags);

function userForm(reload) {
  const name = h("input", { required: true, autocomplete: "off" });
  const password = h("input", { type: "password", autocomplete: "new-password" });
  const tags = h("input", { placeholder: "management, monitoring, policymaker, administrator" });
  return formCard("Add or update a user",
    [field("Username", name), field("Password (empty: none, login refused)", password), field("Tags (comma-separated)", tags)],
    "Save user", "Cannot save the user", async () => {
      const body = { tags: tags.value };
      if (password.value) body.password = password.value;
      else body.password_hash = "";
      await api("PUT", "/users/" + seg(name.value), body);
      toast(`User ${name.value} saved`);
      name.value = password.value = tags.value = "";
      await reload();
    });
}

function permissionForm(reload) {
  const user = h("input", { required: true });
  const vhost = h("input", { value: "/", required: true });
  const [configure, write, read] = [0, 1, 2].map(() => h("input", { value: ".*" }));
  return formCard("Set permissions",
    h("div", { class: "inline-fields" }, field("User", user), field("Vhost", vhost),
      field("Configure", configure), field("Write", write), field("Read", read)),
    "Set permissions", "Cannot set permissions", async () => {
      await api("PUT", `/permissions/${seg(vhost.value)}/${seg(user.value)}`,
        { configure: configure.value, write: write.value, read: read.value });
      toast(`Permissions of ${user.value} in ${vhost.value} set`);
      await reload();
    });
}
