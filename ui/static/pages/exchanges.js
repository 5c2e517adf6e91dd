// Exchanges: the list, and one exchange's facts, bindings and (for an
// x-delayed-message exchange) the messages it holds, cancellable.

import { api, seg } from "../app.js";
import { h, table, facts, rate, toast } from "../dom.js";
import { pagedList } from "../paged.js";

export function exchanges(main) {
  return pagedList(main, "Exchanges", "/exchanges", [
    ["Name", (x) => h("a", { href: `#/exchanges/${seg(x.vhost)}/${seg(x.name || "amq.default")}` }, x.name || "(default)")],
    ["Vhost", (x) => x.vhost],
    ["Type", (x) => x.type],
    ["Durable", (x) => (x.durable ? "yes" : "no")],
    ["In", (x) => rate(x.message_stats?.publish_in_details?.rate)],
    ["Out", (x) => rate(x.message_stats?.publish_out_details?.rate)],
  ], "exchanges");
}

export async function exchange(main, vhost, name) {
  const base = `/exchanges/${seg(vhost)}/${seg(name)}`;
  const x = await api("GET", base);
  const bindings = await api("GET", base + "/bindings/source");
  main.append(
    h("p", {}, h("a", { href: "#/exchanges" }, "Exchanges"), " / ", vhost),
    h("h1", {}, "Exchange ", h("span", { class: "name" }, x.name || "(default)")),
    h("section", { class: "card" }, facts([
      ["Type", x.type],
      ["Durable", x.durable ? "yes" : "no"],
      ["Internal", x.internal ? "yes" : "no"],
      ...Object.entries(x.arguments || {}).map(([k, v]) => [k, JSON.stringify(v)]),
    ])),
    h("section", { class: "card", "aria-label": "Bindings" }, h("h2", {}, "Bindings"), table([
      ["To", (b) => `${b.destination_type} ${b.destination}`],
      ["Routing key", (b) => b.routing_key],
    ], bindings)),
  );
  if (x.type === "x-delayed-message") main.append(await delayed(base));
}

/** The messages a delayed-message exchange holds, each cancellable. */
async function delayed(base) {
  const section = h("section", { class: "card", "aria-label": "Delayed messages" });
  async function load() {
    const held = await api("GET", base + "/delayed?limit=100");
    section.replaceChildren(h("h2", {}, `Delayed messages (${held.length}${held.length === 100 ? "+" : ""})`),
      held.length ? table([
        ["Due", (m) => new Date(m.due_at).toISOString().replace("T", " ").slice(0, 19)],
        ["In", (m) => Math.ceil(m.delay_remaining_ms / 1000) + " s"],
        ["Routing key", (m) => m.routing_key],
        ["Payload", (m) => h("code", {}, m.payload.slice(0, 80))],
        ["", (m) => h("button", {
          type: "button", class: "link", "aria-label": "Cancel message " + m.id,
          onclick: async () => {
            await api("DELETE", `${base}/delayed/${m.id}`).then(() => toast("Cancelled"), (e) => toast(e.message));
            await load();
          },
        }, "Cancel")],
      ], held, { class: "delayed" }) : h("p", {}, "No delayed messages."));
  }
  await load();
  return section;
}
