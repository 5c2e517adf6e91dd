// A live time-series chart (uPlot, vendored): the page adds one sample
// per refresh; the last ten minutes are kept.

import { h } from "./dom.js";

const KEEP = 120; // samples: ten minutes at one per 5 s

/** A time-series chart of `series` ([label, pick, colour]); `destroy()`
 * when its page is left (uPlot keeps every plot for its resize handling). */
export function chart(title, series, unit) {
  const box = h("figure", { class: "chart", "data-title": title }, h("figcaption", {}, title));
  const data = [[], ...series.map(() => [])];
  const opts = {
    width: 520,
    height: 200,
    scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] } },
    series: [{}, ...series.map(([label, , stroke]) => ({ label, stroke, width: 2, value: (_u, v) => (v == null ? "" : v.toFixed(unit === "/s" ? 1 : 0) + (unit || "")) }))],
    axes: [{}, { size: 60 }],
  };
  const plot = new uPlot(opts, data, box);
  return {
    el: box,
    destroy: () => plot.destroy(),
    add(t, o) {
      data[0].push(t);
      series.forEach(([, pick], i) => data[i + 1].push(Number(pick(o) || 0)));
      if (data[0].length > KEEP) data.forEach((d) => d.shift());
      plot.setData(data);
      // The latest values, by series: what the chart's right edge shows.
      box.dataset.last = JSON.stringify(Object.fromEntries(series.map(([label], i) => [label, data[i + 1].at(-1)])));
    },
  };
}
