// Line charts with uPlot (the maintained charting library the API serves from node_modules at
// /ui/vendor). Curve colours are the Okabe-Ito palette, distinguishable with the common forms of
// colour blindness, and each series also differs by dash pattern so colour is never the only cue.
import uPlot from "../vendor/uPlot.esm.js";
import { h } from "./dom.js";

export const OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"];
const DASHES = [[], [6, 3], [2, 2], [8, 3, 2, 3]];

/**
 * A chart of `seriesNames` against the training step, inside a <figure> with a caption, appended
 * to `parent`. `add(step, values)` appends one point per series (missing ones stay gaps). The
 * figure's data-points attribute counts the points, for tests and for screen readers' summary.
 */
export function lineChart(parent, { id, title, seriesNames, yLabel }) {
  const summary = h("p", { class: "visually-hidden", id: `${id}-summary` });
  const figure = h("figure", { class: "chart", id, "data-points": "0", "aria-describedby": `${id}-summary` }, h("figcaption", {}, title));
  const holder = h("div", { role: "img", "aria-label": `${title} chart` });
  figure.append(holder, summary);
  parent.append(figure);

  const data = [[], ...seriesNames.map(() => [])];
  const plot = new uPlot(
    {
      width: Math.max(320, Math.min(560, parent.clientWidth || 560)),
      height: 240,
      scales: { x: { time: false } },
      // The legend names the series; values under the cursor would read "--" most of the time.
      legend: { live: false },
      axes: [{ label: "step" }, { label: yLabel ?? "" }],
      series: [
        { label: "step" },
        ...seriesNames.map((name, index) => ({
          label: name,
          stroke: OKABE_ITO[index % OKABE_ITO.length],
          dash: DASHES[index % DASHES.length],
          width: 2,
          points: { show: true, size: 5 },
          spanGaps: true,
        })),
      ],
    },
    data,
    holder,
  );

  return {
    add(step, values) {
      // A retried attempt resumes from a checkpoint: its steps supersede the earlier attempt's from there on.
      const at = data[0].findIndex((x) => x >= step);
      if (at >= 0) for (const column of data) column.length = at;
      data[0].push(step);
      seriesNames.forEach((name, index) => data[index + 1].push(values[name] ?? null));
      plot.setData(data);
      figure.dataset.points = String(data[0].length);
      const last = seriesNames.map((name) => `${name} ${values[name]?.toFixed?.(4) ?? "n/a"}`).join(", ");
      summary.textContent = `${data[0].length} points; at step ${step}: ${last}`;
    },
    get points() {
      return data[0].length;
    },
  };
}
