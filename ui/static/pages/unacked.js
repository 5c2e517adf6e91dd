// Unacked deliveries: who holds which message and for how long, from
// Warren's own /unacked routes (of a queue, or of a connection). Shown on
// the queue and connection pages.

import { api } from "../app.js";
import { h, table, num, bytes } from "../dom.js";

/** Milliseconds as "4.2 s", "3 min 5 s", "2 h 10 min". */
export function age(ms) {
  if (ms === undefined || ms === null) return "";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A card listing the unacked deliveries `path` reports; returns it and
 * its refresh function. */
export function unackedCard(path) {
  const card = h("section", { class: "card", "aria-label": "Unacked messages" });
  async function refresh() {
    const r = await api("GET", path + "?limit=50");
    const children = [h("h2", {}, "Unacked messages")];
    if (!r.total) {
      children.push(h("p", {}, "No unacked messages."));
    } else {
      children.push(
        h("p", {}, `${num(r.total)} unacked, held by:`),
        table([
          ["Consumer", (c) => c.consumer_tag ?? "(basic.get)"],
          ["Channel", (c) => c.channel],
          ["Queue", (c) => c.queue],
          ["Unacked", (c) => num(c.unacked)],
          ["Bytes", (c) => bytes(c.bytes_in_memory)],
          ["Oldest held for", (c) => age(c.oldest_held_ms)],
        ], r.consumers, { class: "holders" }),
        h("h3", {}, "Oldest unacked messages"),
        table([
          ["Held for", (m) => age(m.held_ms)],
          ["Consumer", (m) => m.consumer_tag ?? "(basic.get)"],
          ["Delivery tag", (m) => m.delivery_tag],
          ["Queue", (m) => m.queue],
          ["Routing key", (m) => m.routing_key],
          ["Message id", (m) => m.message_id ?? ""],
          ["Redelivered", (m) => (m.redelivered ? "yes" : "no")],
          ["Bytes", (m) => (m.payload_bytes === null ? "on disk" : bytes(m.payload_bytes))],
        ], r.messages, { class: "unacked" }));
    }
    if (r.unanswered && r.unanswered.length) {
      // A client that stopped reading its socket: its connection cannot
      // answer, and its consumers are the likely culprits.
      children.push(h("h3", { class: "bad" }, "Not answering (client not reading?)"), table([
        ["Connection", (u) => u.connection],
        ["User", (u) => u.user],
        ["Channels (unacked a moment ago)", (u) => u.channels.map((c) =>
          `${c.channel_number}: ${num(c.unacked)} unacked, consumers ${c.consumer_tags.join(", ") || "none"}`).join("; ")],
      ], r.unanswered, { class: "unanswered" }));
    }
    card.replaceChildren(...children);
  }
  return [card, refresh];
}
