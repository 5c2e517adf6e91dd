// Admin: policies and operator policies (listed, added or replaced,
// deleted), and definitions download and upload.

import { api, seg } from "../app.js";
import { h, table, field, toast, formCard, action } from "../dom.js";
import { tabs } from "./admin.js";

export async function policies(main) {
  const userList = h("div", {});
  const operatorList = h("div", {});
  main.append(tabs("#/admin/policies"), h("h1", {}, "Policies"), userList, policyForm("/policies", "Add or replace a policy", load),
    h("h1", {}, "Operator policies"), operatorList, policyForm("/operator-policies", "Add or replace an operator policy", load));
  async function load() {
    const [ps, ops] = await Promise.all([api("GET", "/policies"), api("GET", "/operator-policies")]);
    userList.replaceChildren(policyTable(ps, "/policies", "Policies", load));
    operatorList.replaceChildren(policyTable(ops, "/operator-policies", "Operator policies", load));
  }
  await load();
}

function policyTable(items, path, label, reload) {
  if (!items.length) return h("p", {}, "None.");
  return table([
    ["Vhost", (p) => p.vhost], ["Name", (p) => p.name], ["Pattern", (p) => p.pattern],
    ["Apply to", (p) => p["apply-to"]], ["Priority", (p) => p.priority],
    ["Definition", (p) => h("code", {}, JSON.stringify(p.definition))],
    ["", (p) => action("Delete", async () => {
      await api("DELETE", `${path}/${seg(p.vhost)}/${seg(p.name)}`);
      toast(`Policy ${p.name} deleted`);
      await reload();
    }, { "aria-label": "Delete policy " + p.name })],
  ], items, { class: "list", "aria-label": label });
}

function policyForm(path, title, reload) {
  const vhost = h("input", { value: "/", required: true });
  const name = h("input", { required: true });
  const pattern = h("input", { required: true, placeholder: "^orders\\." });
  const applyTo = h("select", {}, ["all", "queues", "exchanges", "classic_queues", "quorum_queues", "streams"]
    .map((a) => h("option", { value: a }, a)));
  const priority = h("input", { type: "number", value: 0 });
  const definition = h("textarea", { rows: 3, required: true, placeholder: '{"max-length": 1000}' });
  return formCard(title,
    [h("div", { class: "inline-fields" }, field("Vhost", vhost), field("Name", name), field("Pattern", pattern),
      field("Apply to", applyTo), field("Priority", priority)), field("Definition (JSON)", definition)],
    "Save policy", "Cannot save the policy", async () => {
      let def;
      try {
        def = JSON.parse(definition.value);
      } catch {
        throw new Error("the definition is not valid JSON");
      }
      await api("PUT", `${path}/${seg(vhost.value)}/${seg(name.value)}`,
        { pattern: pattern.value, definition: def, priority: Number(priority.value), "apply-to": applyTo.value });
      toast(`Policy ${name.value} saved`);
      await reload();
    });
}

/** GET /api/definitions as a file; POST a file's JSON back. */
export async function definitions(main) {
  const download = h("button", { type: "button" }, "Download definitions");
  download.addEventListener("click", async () => {
    try {
      const defs = await api("GET", "/definitions");
      const url = URL.createObjectURL(new Blob([JSON.stringify(defs, null, 2)], { type: "application/json" }));
      const a = h("a", { href: url, download: "warren-definitions.json" });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    } catch (err) {
      toast("Cannot download: " + err.message);
    }
  });
  const file = h("input", { type: "file", accept: "application/json,.json", required: true });
  main.append(tabs("#/admin/definitions"), h("h1", {}, "Definitions"),
    h("section", { class: "card", "aria-label": "Export" }, h("h2", {}, "Export"),
      h("p", { class: "hint" }, "Users, vhosts, permissions, policies, queues, exchanges, bindings and parameters, in RabbitMQ's format."),
      download),
    formCard("Import", [h("p", { class: "hint" }, "Adds or replaces what the file defines; nothing else is removed."), field("Definitions file", file)],
      "Upload definitions", "Cannot import", async () => {
        const text = await file.files[0].text();
        let defs;
        try {
          defs = JSON.parse(text);
        } catch {
          throw new Error("the file is not valid JSON");
        }
        await api("POST", "/definitions", defs);
        toast("Definitions imported");
      }));
}
