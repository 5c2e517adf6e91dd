// Connections and channels: lists paged by the server, and a connection's
// page with its client properties, channels (prefetch, unacked, rates),
// the messages it holds unacked, and closing it with a reason.

import { api, seg } from "../app.js";
import { h, table, facts, num, rate, bytes, field, toast } from "../dom.js";
import { pagedList } from "../paged.js";
import { unackedCard } from "./unacked.js";

const client = (c) => {
  const p = c.client_properties || {};
  return [p.product, p.version].filter(Boolean).join(" ");
};
const connLink = (name) => h("a", { href: "#/connections/" + seg(name) }, name);

export function connections(main) {
  return pagedList(main, "Connections", "/connections", [
    ["Name", (c) => connLink(c.name)],
    ["User", (c) => c.user],
    ["Vhost", (c) => c.vhost],
    ["Client", client],
    ["TLS", (c) => (c.ssl ? c.ssl_protocol : "no")],
    ["Channels", (c) => num(c.channels)],
    ["State", (c) => c.state],
    ["From client", (c) => bytes(c.recv_oct_details?.rate) + "/s"],
    ["To client", (c) => bytes(c.send_oct_details?.rate) + "/s"],
  ], "connections");
}

export function channels(main) {
  return pagedList(main, "Channels", "/channels", [
    ["Channel", (c) => h("a", { href: "#/connections/" + seg(c.connection_details.name) }, c.name)],
    ["User", (c) => c.user],
    ["Mode", channelMode],
    ["Prefetch", (c) => prefetch(c)],
    ["Unacked", (c) => num(c.messages_unacknowledged)],
    ["Unconfirmed", (c) => num(c.messages_unconfirmed)],
    ["Consumers", (c) => num(c.consumer_count)],
    ["Published", (c) => rate(c.message_stats?.publish_details?.rate)],
    ["Delivered", (c) => rate(c.message_stats?.deliver_get_details?.rate)],
    ["Acked", (c) => rate(c.message_stats?.ack_details?.rate)],
  ], "channels");
}

const channelMode = (c) => [c.confirm && "confirm", c.transactional && "transactional"].filter(Boolean).join(", ") || "plain";
const prefetch = (c) => `${c.prefetch_count || "none"}` + (c.global_prefetch_count ? ` (global ${c.global_prefetch_count})` : "");

export async function connection(main, name) {
  const base = "/connections/" + seg(name);
  const details = h("div", { class: "cols" });
  const chans = h("section", { class: "card", "aria-label": "Channels" });
  const [unacked, refreshUnacked] = unackedCard(base + "/unacked");
  main.append(
    h("p", {}, h("a", { href: "#/connections" }, "Connections")),
    h("h1", {}, "Connection ", h("span", { class: "name" }, name)),
    details, chans, unacked, closeForm(base, name));

  async function refresh() {
    const c = await api("GET", base);
    details.replaceChildren(
      h("section", { class: "card", "aria-label": "Details" }, h("h2", {}, "Details"), facts([
        ["User", c.user], ["Vhost", c.vhost], ["State", c.state],
        ["Client address", `${c.peer_host}:${c.peer_port}`],
        ["Connected at", new Date(c.connected_at).toISOString().replace("T", " ").slice(0, 19)],
        ["Authentication", c.auth_mechanism],
        ["TLS", c.ssl ? `${c.ssl_protocol} ${c.ssl_cipher}` : "no"],
        ["Heartbeat", c.timeout + " s"], ["Frame max", num(c.frame_max)], ["Channel max", num(c.channel_max)],
        ["From client", bytes(c.recv_oct_details?.rate) + "/s"], ["To client", bytes(c.send_oct_details?.rate) + "/s"],
      ])),
      h("section", { class: "card", "aria-label": "Client properties" }, h("h2", {}, "Client properties"),
        facts(Object.entries(c.client_properties || {}).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]))));
    const cs = await api("GET", base + "/channels");
    chans.replaceChildren(h("h2", {}, "Channels"), cs.length ? table([
      ["Number", (ch) => ch.number],
      ["Mode", channelMode],
      ["Prefetch", prefetch],
      ["Unacked", (ch) => num(ch.messages_unacknowledged)],
      ["Consumers", (ch) => num(ch.consumer_count)],
      ["Published", (ch) => rate(ch.message_stats?.publish_details?.rate)],
      ["Delivered", (ch) => rate(ch.message_stats?.deliver_get_details?.rate)],
      ["Acked", (ch) => rate(ch.message_stats?.ack_details?.rate)],
    ], cs) : h("p", {}, "No channels."));
    await refreshUnacked();
  }

  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 5000);
  return () => clearInterval(timer);
}

/** DELETE /api/connections/{name} with the X-Reason header. */
function closeForm(base, name) {
  const reason = h("input", { value: "Closed via management UI", required: true });
  const form = h("form", { class: "card", "aria-label": "Close this connection" },
    h("h2", {}, "Close this connection"),
    h("p", { class: "hint" }, "The client is told the reason (320 CONNECTION_FORCED); its unacked messages go back to their queues."),
    field("Reason", reason), h("button", { type: "submit", class: "danger" }, "Close connection"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("DELETE", base, undefined, { "x-reason": reason.value });
      toast(`Connection ${name} closed`);
      location.hash = "#/connections";
    } catch (err) {
      toast("Cannot close: " + err.message);
    }
  });
  return form;
}
