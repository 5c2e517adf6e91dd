// One queue: its facts, arguments and policy, consumers, bindings (add,
// remove), and what an operator does with its messages: publish, get
// (requeued or acked, x-death decoded into a table), move to another
// queue or exchange (a dynamic shovel), purge, delete.

import { api, seg } from "../app.js";
import { h, table, facts, num, rate, field, toast, bytes } from "../dom.js";
import { unackedCard } from "./unacked.js";
import { chart } from "../chart.js";

const RATES = [
  ["Published", (q) => q.message_stats?.publish_details?.rate, "#2563eb"],
  ["Delivered", (q) => q.message_stats?.deliver_get_details?.rate, "#16a34a"],
  ["Acked", (q) => q.message_stats?.ack_details?.rate, "#9333ea"],
  ["Redelivered", (q) => q.message_stats?.redeliver_details?.rate, "#ea580c"],
];
const QUEUED = [
  ["Ready", (q) => q.messages_ready, "#2563eb"],
  ["Unacked", (q) => q.messages_unacknowledged, "#ea580c"],
];

export async function queue(main, vhost, name) {
  // Set when the page is left: what it started stops.
  const left = { gone: false };
  const base = `/queues/${seg(vhost)}/${seg(name)}`;
  const info = h("div", { class: "cols" });
  const consumers = h("section", { class: "card", "aria-label": "Consumers" });
  const bindings = h("section", { class: "card", "aria-label": "Bindings" });
  const [unacked, refreshUnacked] = unackedCard(base + "/unacked");
  const rates = chart("Message rates", RATES, "/s");
  const queued = chart("Queued messages", QUEUED, "");
  main.append(
    h("p", {}, h("a", { href: "#/queues" }, "Queues"), " / ", vhost),
    h("h1", {}, "Queue ", h("span", { class: "name" }, name)),
    info, h("div", { class: "charts" }, rates.el, queued.el), consumers, unacked, bindings,
    h("div", { class: "cols" }, getForm(base), publishForm(vhost, name)),
    h("div", { class: "cols" }, moveForm(vhost, name, left), dangerZone(base, name)),
  );

  async function refresh() {
    const q = await api("GET", base);
    const t = Date.now() / 1000;
    rates.add(t, q);
    queued.add(t, q);
    const policy = q.effective_policy_definition || {};
    info.replaceChildren(
      h("section", { class: "card", "aria-label": "Details" }, h("h2", {}, "Details"), facts([
        ["Type", q.type],
        ["Durable", q.durable ? "yes" : "no"],
        ["Ready", num(q.messages_ready)],
        ["Unacked", num(q.messages_unacknowledged)],
        ["Consumers", num(q.consumers)],
        ["Incoming", rate(q.message_stats?.publish_details?.rate)],
        ["Delivered", rate(q.message_stats?.deliver_get_details?.rate)],
        ["Memory", bytes(q.memory)],
      ])),
      h("section", { class: "card", "aria-label": "Arguments and policy" }, h("h2", {}, "Arguments and policy"),
        facts([
          ...Object.entries(q.arguments || {}).map(([k, v]) => [k, JSON.stringify(v)]),
          ["Policy", q.policy || "none"],
          ...Object.entries(policy).map(([k, v]) => ["policy: " + k, JSON.stringify(v)]),
        ])),
    );
    consumers.replaceChildren(h("h2", {}, "Consumers"), (q.consumer_details || []).length
      ? table([
        ["Tag", (c) => c.consumer_tag],
        ["Channel", (c) => c.channel_details?.name],
        ["Ack required", (c) => (c.ack_required ? "yes" : "no")],
        ["Prefetch", (c) => c.prefetch_count],
      ], q.consumer_details)
      : h("p", {}, "No consumers."));
    await refreshUnacked();
    const bs = await api("GET", base + "/bindings");
    bindings.replaceChildren(h("h2", {}, "Bindings"),
      table([
        ["From", (b) => b.source || "(default exchange)"],
        ["Routing key", (b) => b.routing_key],
        ["", (b) => (b.source ? h("button", {
          type: "button", class: "link",
          onclick: () => unbind(b).catch((e) => toast(e.message)),
        }, "Unbind") : "")],
      ], bs), bindForm());
  }

  async function unbind(b) {
    await api("DELETE", `/bindings/${seg(vhost)}/e/${seg(b.source)}/q/${seg(name)}/${seg(b.properties_key)}`);
    toast(`Unbound from ${b.source}`);
    await refresh();
  }

  function bindForm() {
    const source = h("input", { required: true });
    const key = h("input", {});
    const form = h("form", { class: "inline", "aria-label": "Add a binding" },
      field("From exchange", source), field("Routing key", key),
      h("button", { type: "submit" }, "Bind"));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await api("POST", `/bindings/${seg(vhost)}/e/${seg(source.value)}/q/${seg(name)}`, { routing_key: key.value, arguments: {} });
        toast(`Bound to ${source.value}`);
        await refresh();
      } catch (err) {
        toast("Cannot bind: " + err.message);
      }
    });
    return form;
  }

  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 5000);
  return () => {
    clearInterval(timer);
    left.gone = true;
    rates.destroy();
    queued.destroy();
  };
}

/** Get messages: shown with their properties and decoded x-death. */
function getForm(base) {
  const count = h("input", { type: "number", min: 1, max: 1000, value: 1 });
  const mode = h("select", {},
    h("option", { value: "ack_requeue_true" }, "Look (requeue)"),
    h("option", { value: "ack_requeue_false" }, "Take (ack, removed from the queue)"));
  const out = h("div", { class: "messages" });
  const form = h("form", { class: "card", "aria-label": "Get messages" },
    h("h2", {}, "Get messages"), field("Messages", count), field("Mode", mode),
    h("button", { type: "submit" }, "Get messages"), out);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const ms = await api("POST", base + "/get", { count: Number(count.value), ackmode: mode.value, encoding: "auto", truncate: 50000 });
      out.replaceChildren(...(ms.length ? ms.map(messageView) : [h("p", {}, "The queue is empty.")]));
    } catch (err) {
      toast("Cannot get messages: " + err.message);
    }
  });
  return form;
}

/** One message: payload, properties, and its x-death history as a table. */
export function messageView(m, i) {
  const p = m.properties || {};
  const headers = p.headers || {};
  const deaths = Array.isArray(headers["x-death"]) ? headers["x-death"] : [];
  const otherHeaders = Object.entries(headers).filter(([k]) => k !== "x-death");
  return h("article", { class: "message", "aria-label": "Message " + (i + 1) },
    h("h3", {}, `Message ${i + 1}`, m.redelivered ? " (redelivered)" : ""),
    facts([
      ["Exchange", m.exchange || "(default)"],
      ["Routing key", m.routing_key],
      ["Payload", h("pre", { class: "payload" }, m.payload)],
      ["Payload bytes", num(m.payload_bytes)],
      ...Object.entries(p).filter(([k]) => k !== "headers").map(([k, v]) => [k, JSON.stringify(v)]),
      ...otherHeaders.map(([k, v]) => ["header " + k, JSON.stringify(v)]),
    ]),
    deaths.length ? h("div", {}, h("h4", {}, "Dead-letter history (x-death)"), table([
      ["Reason", (d) => d.reason],
      ["Queue", (d) => d.queue],
      ["Exchange", (d) => d.exchange || "(default)"],
      ["Routing keys", (d) => (d["routing-keys"] || []).join(", ")],
      ["Count", (d) => d.count],
      ["Time", (d) => (d.time ? new Date(Number(d.time) * 1000).toISOString().replace("T", " ").slice(0, 19) : "")],
    ], deaths, { class: "x-death" })) : "");
}

/** basic.publish through POST /api/exchanges/{vhost}/amq.default/publish. */
function publishForm(vhost, name) {
  const payload = h("textarea", { rows: 3 });
  const persistent = h("input", { type: "checkbox", checked: true });
  const form = h("form", { class: "card", "aria-label": "Publish a message" },
    h("h2", {}, "Publish a message"), field("Payload", payload),
    h("label", {}, persistent, " Persistent"),
    h("button", { type: "submit" }, "Publish"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await api("POST", `/exchanges/${seg(vhost)}/amq.default/publish`, {
        routing_key: name, payload: payload.value, payload_encoding: "string",
        properties: persistent.checked ? { delivery_mode: 2 } : {},
      });
      toast(r.routed ? "Message published" : "Message published but not routed");
    } catch (err) {
      toast("Cannot publish: " + err.message);
    }
  });
  return form;
}

/** Move messages elsewhere: a dynamic shovel that deletes itself when done. */
function moveForm(vhost, name, left) {
  const kind = h("select", {}, h("option", { value: "queue" }, "queue"), h("option", { value: "exchange" }, "exchange"));
  const target = h("input", { required: true });
  const key = h("input", { placeholder: "(the messages' own)" });
  const how = h("input", { type: "number", min: 1, placeholder: "all" });
  const progress = h("p", { class: "progress", role: "status" });
  const form = h("form", { class: "card", "aria-label": "Move messages" },
    h("h2", {}, "Move messages"),
    h("p", { class: "hint" }, "Each message is removed from this queue only once the destination has it."),
    field("To a", kind), field("Named", target), field("Routing key (exchange)", key), field("How many", how),
    h("button", { type: "submit" }, "Move messages"), progress);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const shovel = `move-${name}-${Date.now()}`;
    const value = {
      "src-protocol": "amqp091", "src-uri": "amqp:///" + seg(vhost), "src-queue": name,
      "dest-protocol": "amqp091", "dest-uri": "amqp:///" + seg(vhost),
      "src-delete-after": how.value ? Number(how.value) : "queue-length", "ack-mode": "on-confirm",
    };
    if (kind.value === "queue") value["dest-queue"] = target.value;
    else {
      value["dest-exchange"] = target.value;
      if (key.value) value["dest-exchange-key"] = key.value;
    }
    try {
      await api("PUT", `/parameters/shovel/${seg(vhost)}/${seg(shovel)}`, { value });
      progress.textContent = "Moving…";
      watch(vhost, shovel, progress, left);
    } catch (err) {
      toast("Cannot move messages: " + err.message);
    }
  });
  return form;
}

/** Show a shovel's progress until it has ended or the page is left. */
async function watch(vhost, shovel, el, left) {
  let last = 0;
  while (!left.gone) {
    const all = await api("GET", "/shovels/" + seg(vhost)).catch(() => null);
    if (all === null || left.gone) return;
    const s = all.find((x) => x.name === shovel);
    if (!s || (s.state === "terminated" && s.reason === "done")) {
      el.textContent = `Done: moved ${num(s ? s.messages_moved : last)} messages.`;
      return;
    }
    if (s.state === "terminated") {
      el.textContent = `Stopped after moving ${num(s.messages_moved)} messages (${s.reason}).`;
      return;
    }
    last = s.messages_moved;
    el.textContent = `${s.state}: moved ${num(s.messages_moved)}` +
      (s.messages_to_move != null ? ` of ${num(s.messages_to_move)}` : "") + (s.reason ? ` (${s.reason})` : "");
    await new Promise((r) => setTimeout(r, 500));
  }
}

function dangerZone(base, name) {
  const purge = h("button", { type: "button" }, "Purge messages");
  const del = h("button", { type: "button", class: "danger" }, "Delete queue");
  purge.addEventListener("click", async () => {
    if (!confirm(`Remove every ready message of ${name}?`)) return;
    await api("DELETE", base + "/contents").then(() => toast("Purged"), (e) => toast(e.message));
  });
  del.addEventListener("click", async () => {
    if (!confirm(`Delete queue ${name} and its messages?`)) return;
    await api("DELETE", base).then(() => { toast(`Queue ${name} deleted`); location.hash = "#/queues"; }, (e) => toast(e.message));
  });
  return h("section", { class: "card", "aria-label": "Purge or delete" }, h("h2", {}, "Purge or delete"), purge, " ", del);
}
