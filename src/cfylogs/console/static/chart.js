// Line charts in plain SVG: a few series of at most an hour of 5-second samples.
// No library: the charts need lines, two axes and a hover readout, nothing more.

import { clock, el, svg } from "./format.js";

const MARGIN = { left: 58, right: 12, top: 10, bottom: 22 };
const TIME_STEPS = [60, 120, 300, 600, 900, 1800, 3600];

/** The smallest "round" number (1, 2, 2.5, 5 times a power of ten) at least `value`. */
function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

/** Runs of points without a gap (a null value is a gap). */
function runs(times, values, x, y) {
  const out = [];
  let current = [];
  values.forEach((value, i) => {
    if (value === null || value === undefined) {
      if (current.length) out.push(current);
      current = [];
    } else {
      current.push(`${x(times[i]).toFixed(1)},${y(value).toFixed(1)}`);
    }
  });
  if (current.length) out.push(current);
  return out;
}

export class LineChart {
  /**
   * @param container element to draw in (its size is the chart's)
   * @param series [{key, label, className}] in legend order
   * @param format number -> text for the axis and the readout
   */
  constructor(container, series, format) {
    this.container = container;
    this.series = series;
    this.format = format;
    this.times = [];
    this.values = {};
    this.svg = svg("svg", { role: "img" });
    this.readout = el("span", { className: "readout" });
    const legend = el("div", { className: "legend" });
    for (const s of series) {
      legend.append(el("span", {}, el("span", { className: `swatch ${s.className}` }), s.label));
    }
    legend.append(this.readout);
    container.append(this.svg);
    container.after(legend);
    this.svg.addEventListener("mousemove", (e) => this.hover(e));
    this.svg.addEventListener("mouseleave", () => this.render());
    window.addEventListener("resize", () => this.render());
  }

  update(times, values) {
    this.times = times;
    this.values = values;
    this.render();
  }

  render(cursorIndex = null) {
    const width = this.container.clientWidth || 600;
    const height = this.container.clientHeight || 220;
    this.width = width;
    this.svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    this.svg.replaceChildren();
    const times = this.times;
    if (times.length < 2) {
      const text = svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" });
      text.textContent = "Collecting samples (one every few seconds)…";
      this.svg.append(text);
      return;
    }
    const t0 = times[0];
    const t1 = times[times.length - 1];
    const all = this.series.flatMap((s) => (this.values[s.key] || []).filter((v) => v !== null));
    const top = niceCeiling(Math.max(0, ...all));
    const plotW = width - MARGIN.left - MARGIN.right;
    const plotH = height - MARGIN.top - MARGIN.bottom;
    const x = (t) => MARGIN.left + ((t - t0) / (t1 - t0 || 1)) * plotW;
    const y = (v) => MARGIN.top + plotH - (v / top) * plotH;
    this.x = x;

    for (let i = 0; i <= 4; i++) {
      const value = (top * i) / 4;
      this.svg.append(svg("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: y(value), y2: y(value), class: i ? "grid" : "axis" }));
      const label = svg("text", { x: MARGIN.left - 6, y: y(value) + 4, "text-anchor": "end" });
      label.textContent = this.format(value);
      this.svg.append(label);
    }
    const span = t1 - t0;
    const step = TIME_STEPS.find((s) => span / s <= 6) || 7200;
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
      this.svg.append(svg("line", { x1: x(t), x2: x(t), y1: MARGIN.top, y2: MARGIN.top + plotH, class: "grid" }));
      const label = svg("text", { x: x(t), y: height - 6, "text-anchor": "middle" });
      label.textContent = clock(t);
      this.svg.append(label);
    }
    for (const s of this.series) {
      for (const points of runs(times, this.values[s.key] || [], x, y)) {
        if (points.length === 1) points.push(points[0]);
        this.svg.append(svg("polyline", { points: points.join(" "), class: `line ${s.className}`, "data-series": s.key }));
      }
    }
    if (cursorIndex !== null) {
      const cx = x(times[cursorIndex]);
      this.svg.append(svg("line", { x1: cx, x2: cx, y1: MARGIN.top, y2: MARGIN.top + plotH, class: "cursor" }));
      const parts = this.series.map((s) => `${s.label} ${this.format((this.values[s.key] || [])[cursorIndex])}`);
      this.readout.textContent = `${clock(times[cursorIndex])} UTC  ${parts.join("  ")}`;
    } else {
      this.readout.textContent = "";
    }
  }

  hover(event) {
    if (this.times.length < 2 || !this.x) return;
    const box = this.svg.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * this.width;
    let best = 0;
    this.times.forEach((t, i) => {
      if (Math.abs(this.x(t) - px) < Math.abs(this.x(this.times[best]) - px)) best = i;
    });
    this.render(best);
  }
}

/** A small line of a registration's backlog (no axes), or null with fewer than 2 points. */
export function sparkline(values, width = 120, height = 26) {
  const known = values.filter((v) => v !== null && v !== undefined);
  if (known.length < 2) return null;
  const top = Math.max(1, ...known);
  const step = width / Math.max(values.length - 1, 1);
  const points = [];
  values.forEach((v, i) => {
    if (v !== null && v !== undefined) points.push(`${(i * step).toFixed(1)},${(height - 2 - (v / top) * (height - 4)).toFixed(1)}`);
  });
  const node = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "spark", role: "img" });
  const title = svg("title");
  title.textContent = `backlog over the last ${values.length} samples, up to ${top} events`;
  node.append(title, svg("polyline", { points: points.join(" ") }));
  return node;
}
