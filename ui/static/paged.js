// A list paged, filtered by name and refreshed by the server's list
// parameters (page, page_size, name), so a long list costs one page.

import { api } from "./app.js";
import { h, table, num } from "./dom.js";

const PAGE_SIZE = 50;

/** A server-paged list of `path` with `columns`, refreshed every 5 s. */
export function pagedList(main, title, path, columns, noun) {
  const state = { page: 1, name: "" };
  const list = h("div", { class: "paged" });
  const filter = h("input", { type: "search", placeholder: "Filter by name", "aria-label": `Filter ${noun} by name` });
  let debounce;
  filter.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { state.name = filter.value; state.page = 1; load(); }, 250);
  });
  main.append(h("h1", {}, title), h("div", { class: "toolbar" }, filter), list);
  async function load() {
    const q = new URLSearchParams({ page: state.page, page_size: PAGE_SIZE, name: state.name, pagination: "true" });
    const res = await api("GET", path + "?" + q);
    const pager = h("nav", { class: "pager", "aria-label": "Pages" },
      h("button", { type: "button", disabled: state.page <= 1, onclick: () => { state.page--; load(); } }, "Previous"),
      ` Page ${res.page} of ${res.page_count} (${num(res.filtered_count)} of ${num(res.total_count)} ${noun}) `,
      h("button", { type: "button", disabled: state.page >= res.page_count, onclick: () => { state.page++; load(); } }, "Next"));
    list.replaceChildren(res.items.length ? table(columns, res.items, { class: "list" }) : h("p", {}, `No ${noun}.`), pager);
  }
  return load().then(() => {
    const timer = setInterval(() => load().catch(() => {}), 5000);
    return () => {
      clearInterval(timer);
      clearTimeout(debounce);
    };
  });
}
