// Queues: a list paged, sorted and filtered by the server (so 10,000
// queues cost one page), and a form that declares a queue.

import { api, seg } from "../app.js";
import { h, table, num, rate, field, toast } from "../dom.js";

const PAGE_SIZE = 50;
const SORTS = [
  ["name", "Name"],
  ["messages_ready", "Ready"],
  ["messages_unacknowledged", "Unacked"],
  ["consumers", "Consumers"],
];

export async function queues(main) {
  const state = { page: 1, sort: "name", reverse: false, name: "" };
  const list = h("div", { id: "queue-list" });
  const filter = h("input", { type: "search", placeholder: "Filter by name", "aria-label": "Filter queues by name" });
  let debounce;
  filter.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { state.name = filter.value; state.page = 1; load(); }, 250);
  });
  main.append(h("h1", {}, "Queues"), h("div", { class: "toolbar" }, filter), list, declareForm(load));

  async function load() {
    const q = new URLSearchParams({
      page: state.page, page_size: PAGE_SIZE, name: state.name, use_regex: "false",
      sort: state.sort, sort_reverse: state.reverse, pagination: "true",
    });
    const res = await api("GET", "/queues?" + q);
    const sortButton = (key, label) => {
      const arrow = state.sort === key ? (state.reverse ? " ▼" : " ▲") : "";
      return h("button", {
        class: "link", type: "button", "aria-label": "Sort by " + label,
        onclick: () => { state.reverse = state.sort === key ? !state.reverse : false; state.sort = key; load(); },
      }, label + arrow);
    };
    const columns = [
      [sortButton("name", "Name"), (r) => h("a", { href: `#/queues/${seg(r.vhost)}/${seg(r.name)}` }, r.name)],
      ["Vhost", (r) => r.vhost],
      ["Type", (r) => r.type],
      ...SORTS.slice(1).map(([key, label]) => [sortButton(key, label), (r) => num(r[key])]),
      ["Incoming", (r) => rate(r.message_stats?.publish_details?.rate)],
      ["Delivered", (r) => rate(r.message_stats?.deliver_get_details?.rate)],
    ];
    const pager = h("nav", { class: "pager", "aria-label": "Pages" },
      h("button", { type: "button", disabled: state.page <= 1, onclick: () => { state.page--; load(); } }, "Previous"),
      ` Page ${res.page} of ${res.page_count} (${num(res.filtered_count)} of ${num(res.total_count)} queues) `,
      h("button", { type: "button", disabled: state.page >= res.page_count, onclick: () => { state.page++; load(); } }, "Next"));
    list.replaceChildren(table(columns, res.items, { class: "list" }), pager);
  }

  await load();
  const timer = setInterval(() => load().catch(() => {}), 5000);
  return () => {
    clearInterval(timer);
    clearTimeout(debounce);
  };
}

/** queue.declare through PUT /api/queues/{vhost}/{name}. */
function declareForm(reload) {
  const vhost = h("input", { value: "/", required: true });
  const name = h("input", { required: true });
  const durable = h("select", {}, h("option", { value: "true" }, "durable"), h("option", { value: "false" }, "transient"));
  const type = h("select", {}, ["classic", "stream", "quorum"].map((t) => h("option", { value: t }, t)));
  const args = h("textarea", { rows: 2, placeholder: '{"x-dead-letter-exchange": "dlx"}' });
  const form = h("form", { class: "card", "aria-label": "Add a queue" },
    h("h2", {}, "Add a queue"),
    field("Virtual host", vhost), field("Name", name), field("Durability", durable), field("Type", type),
    field("Arguments (JSON)", args),
    h("button", { type: "submit" }, "Add queue"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const arguments_ = args.value.trim() ? JSON.parse(args.value) : {};
      arguments_["x-queue-type"] = type.value;
      await api("PUT", `/queues/${seg(vhost.value)}/${seg(name.value)}`,
        { durable: durable.value === "true", auto_delete: false, arguments: arguments_ });
      toast(`Queue ${name.value} added`);
      name.value = "";
      await reload();
    } catch (err) {
      toast("Cannot add the queue: " + err.message);
    }
  });
  return form;
}
