// Shovels: what is moving messages, with progress; each can be stopped.

import { api, seg } from "../app.js";
import { h, table, num, toast } from "../dom.js";

export async function shovels(main) {
  const list = h("div", {});
  main.append(h("h1", {}, "Shovels"), list);
  async function load() {
    const all = await api("GET", "/shovels");
    list.replaceChildren(all.length ? table([
      ["Name", (s) => s.name],
      ["Vhost", (s) => s.vhost],
      ["State", (s) => s.state + (s.reason ? ` (${s.reason})` : "")],
      ["From", (s) => s.src_queue ?? `exchange ${s.src_exchange} ${s.src_exchange_key}`],
      ["To", (s) => s.dest_queue ?? (s.dest_exchange != null ? `exchange ${s.dest_exchange} ${s.dest_exchange_key ?? ""}` : "as published")],
      ["Moved", (s) => num(s.messages_moved) + (s.messages_to_move != null ? ` of ${num(s.messages_to_move)}` : "")],
      ["", (s) => h("button", {
        type: "button", class: "link",
        onclick: async () => {
          await api("DELETE", `/parameters/shovel/${seg(s.vhost)}/${seg(s.name)}`).then(() => toast("Stopped"), (e) => toast(e.message));
          await load();
        },
      }, "Stop")],
    ], all, { class: "list" }) : h("p", {}, "No shovels are running."));
  }
  await load();
  const timer = setInterval(() => load().catch(() => {}), 2000);
  return () => clearInterval(timer);
}
