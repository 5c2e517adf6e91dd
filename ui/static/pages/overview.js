// Overview: live charts of message rates and queued messages (sampled
// from /api/overview every few seconds while the page is open, the last
// ten minutes kept), the broker's totals and the node's facts.

import { api } from "../app.js";
import { h, facts, num, rate, bytes } from "../dom.js";
import { chart } from "../chart.js";

const INTERVAL_MS = 5000;

const RATES = [
  ["Published", (o) => o.message_stats?.publish_details?.rate, "#2563eb"],
  ["Delivered", (o) => o.message_stats?.deliver_get_details?.rate, "#16a34a"],
  ["Acked", (o) => o.message_stats?.ack_details?.rate, "#9333ea"],
  ["Redelivered", (o) => o.message_stats?.redeliver_details?.rate, "#ea580c"],
  ["Returned", (o) => o.message_stats?.return_unroutable_details?.rate, "#dc2626"],
];
const QUEUED = [
  ["Ready", (o) => o.queue_totals?.messages_ready, "#2563eb"],
  ["Unacked", (o) => o.queue_totals?.messages_unacknowledged, "#ea580c"],
];

export async function overview(main) {
  const rates = chart("Message rates", RATES, "/s");
  const queued = chart("Queued messages", QUEUED, "");
  const totals = h("section", { class: "card", "aria-label": "Totals" });
  const node = h("section", { class: "card", "aria-label": "Node" });
  main.append(
    h("h1", {}, "Overview"),
    h("div", { class: "charts" }, rates.el, queued.el),
    h("div", { class: "cols" }, totals, node),
  );
  async function refresh() {
    const [o, nodes] = await Promise.all([api("GET", "/overview"), api("GET", "/nodes")]);
    const t = Date.now() / 1000;
    rates.add(t, o);
    queued.add(t, o);
    const ot = o.object_totals || {};
    totals.replaceChildren(h("h2", {}, "Totals"), facts([
      ["Connections", num(ot.connections)],
      ["Channels", num(ot.channels)],
      ["Queues", num(ot.queues)],
      ["Consumers", num(ot.consumers)],
      ["Exchanges", num(ot.exchanges)],
      ["Messages ready", num(o.queue_totals?.messages_ready)],
      ["Messages unacked", num(o.queue_totals?.messages_unacknowledged)],
      ["Publish rate", rate(o.message_stats?.publish_details?.rate)],
    ]));
    const n = nodes[0] || {};
    const alarms = [n.mem_alarm && "memory", n.disk_free_alarm && "disk"].filter(Boolean);
    node.replaceChildren(h("h2", {}, "Node"), facts([
      ["Name", n.name],
      ["Version", `${o.product_name || "Warren"} ${o.product_version || ""} (RabbitMQ API ${o.rabbitmq_version})`],
      ["Uptime", Math.round((n.uptime || 0) / 1000) + " s"],
      ["Memory", `${bytes(n.mem_used)} of ${bytes(n.mem_limit)}`],
      ["Disk free", `${bytes(n.disk_free)} (limit ${bytes(n.disk_free_limit)})`],
      ["Alarms", alarms.length ? h("span", { class: "bad" }, alarms.join(", ")) : "none"],
      ["Listeners", (o.listeners || []).map((l) => `${l.protocol} ${l.ip_address}:${l.port}`).join(", ")],
    ]));
  }
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), INTERVAL_MS);
  return () => {
    clearInterval(timer);
    rates.destroy();
    queued.destroy();
  };
}
