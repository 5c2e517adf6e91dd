// Small DOM helpers. Everything shown comes from the API and may be named
// by any client (queue names, headers, payloads): it is only ever set as
// text, never parsed as HTML.

/** An element with attributes (on* functions become listeners) and children. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
}

/** A table: `columns` are [title, (row) => cell] pairs. */
export function table(columns, rows, attrs = {}) {
  return h("table", attrs,
    h("thead", {}, h("tr", {}, columns.map(([t]) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, columns.map(([, f]) => h("td", {}, f(r)))))));
}

/** A definition list of [term, value] pairs. */
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "")]));
}

let toastTimer;
/** A short message at the bottom of the page. */
export function toast(text) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.classList.add("shown");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove("shown"), 4000);
}

/** Numbers with thousands separators; rates with one decimal. */
export const num = (n) => (n === undefined || n === null ? "" : Number(n).toLocaleString("en-US"));
export const rate = (n) => (n ? Number(n).toFixed(1) : "0.0") + "/s";

/** Bytes in KiB/MiB/GiB. */
export function bytes(n) {
  if (n === undefined || n === null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

/** A form field with its label. */
export function field(label, input) {
  const id = input.id || "f-" + Math.random().toString(36).slice(2);
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input);
}

/** A form card: `children` (fields), a submit button, and `submit` run
 * on submit; its error is shown as a toast prefixed with `failure`. */
export function formCard(title, children, button, failure, submit) {
  const form = h("form", { class: "card", "aria-label": title },
    h("h2", {}, title), children, h("button", { type: "submit" }, button));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await submit();
    } catch (err) {
      toast(failure + ": " + err.message);
    }
  });
  return form;
}

/** A link-styled button running `action`, its error toasted. */
export function action(label, run, attrs = {}) {
  return h("button", {
    type: "button", class: "link", ...attrs,
    onclick: () => run().catch((e) => toast(e.message)),
  }, label);
}
