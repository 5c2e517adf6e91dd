// Admin: virtual hosts (add, delete) and the limits on vhosts and users
// (max-connections, max-queues, max-channels).

import { api, seg } from "../app.js";
import { h, table, field, toast, num, formCard, action } from "../dom.js";
import { tabs } from "./admin.js";

export async function vhosts(main) {
  const list = h("div", {});
  main.append(tabs("#/admin/vhosts"), h("h1", {}, "Virtual hosts"), list, vhostForm(load));
  async function load() {
    const vs = await api("GET", "/vhosts");
    list.replaceChildren(table([
      ["Name", (v) => v.name],
      ["Description", (v) => v.description || ""],
      ["Messages", (v) => num(v.messages)],
      ["", (v) => action("Delete", async () => {
        if (!confirm(`Delete vhost ${v.name} with all its queues and messages?`)) return;
        await api("DELETE", "/vhosts/" + seg(v.name));
        toast(`Vhost ${v.name} deleted`);
        await load();
      }, { "aria-label": "Delete vhost " + v.name })],
    ], vs, { class: "list", "aria-label": "Virtual hosts" }));
  }
  await load();
}

function vhostForm(reload) {
  const name = h("input", { required: true });
  const description = h("input", {});
  return formCard("Add a virtual host", [field("Name", name), field("Description", description)],
    "Add vhost", "Cannot add the vhost", async () => {
      await api("PUT", "/vhosts/" + seg(name.value), { description: description.value });
      toast(`Vhost ${name.value} added`);
      name.value = description.value = "";
      await reload();
    });
}

/** Vhost limits and user limits, each listed with a form to set one. */
export async function limits(main) {
  const vhostList = h("div", {});
  const userList = h("div", {});
  main.append(tabs("#/admin/limits"), h("h1", {}, "Limits"),
    h("h2", {}, "Virtual host limits"), vhostList,
    limitForm("Set a vhost limit", "Vhost", ["max-connections", "max-queues"], "/vhost-limits", load),
    h("h2", {}, "User limits"), userList,
    limitForm("Set a user limit", "User", ["max-connections", "max-channels"], "/user-limits", load));
  async function load() {
    const [vl, ul] = await Promise.all([api("GET", "/vhost-limits"), api("GET", "/user-limits")]);
    vhostList.replaceChildren(limitTable(vl, "vhost", "/vhost-limits", load));
    userList.replaceChildren(limitTable(ul, "user", "/user-limits", load));
  }
  await load();
}

function limitTable(items, who, path, reload) {
  const rows = items.flatMap((l) => Object.entries(l.value || {}).map(([name, value]) => ({ owner: l[who], name, value })));
  if (!rows.length) return h("p", {}, "No limits set.");
  return table([
    [who === "vhost" ? "Vhost" : "User", (r) => r.owner], ["Limit", (r) => r.name], ["Value", (r) => num(r.value)],
    ["", (r) => action("Clear", async () => {
      await api("DELETE", `${path}/${seg(r.owner)}/${seg(r.name)}`);
      toast(`Limit ${r.name} of ${r.owner} cleared`);
      await reload();
    })],
  ], rows, { class: "list" });
}

function limitForm(title, ownerLabel, names, path, reload) {
  const owner = h("input", { required: true });
  const name = h("select", {}, names.map((n) => h("option", { value: n }, n)));
  const value = h("input", { type: "number", min: -1, required: true });
  return formCard(title, h("div", { class: "inline-fields" }, field(ownerLabel, owner), field("Limit", name), field("Value", value)),
    "Set limit", "Cannot set the limit", async () => {
      await api("PUT", `${path}/${seg(owner.value)}/${seg(name.value)}`, { value: Number(value.value) });
      toast(`Limit ${name.value} of ${owner.value} set`);
      await reload();
    });
}
