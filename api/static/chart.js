// A time chart in hand-written SVG: the mean as a line, the min–max of each bucket as a band,
// time ticks in Asia/Shanghai. Gaps in the data break the line rather than bridging them.

import { fmtNumber, floorShanghai, shanghai, t } from "./i18n.js";

const NS = "http://www.w3.org/2000/svg";
const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
const TIME_STEPS = [MIN, 5 * MIN, 10 * MIN, 15 * MIN, 30 * MIN, HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 5 * DAY, 7 * DAY];

function el(name, attrs, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text != null) node.textContent = text;
  return node;
}

// Round steps (1, 2, 5 × 10^n) for the value axis.
function niceTicks(lo, hi, count = 5) {
  if (lo === hi) { lo -= 1; hi += 1; }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  const start = Math.floor(lo / step) * step;
  const n = Math.max(1, Math.ceil((hi - start) / step - 1e-9));
  const ticks = Array.from({ length: n + 1 }, (_, i) => Number((start + i * step).toFixed(10)));
  return { ticks, lo: ticks[0], hi: ticks[n] };
}

function timeLabel(ms, step) {
  const s = shanghai(ms);
  const pad = (n) => String(n).padStart(2, "0");
  if (step >= DAY) return `${pad(s.mo)}-${pad(s.d)}`;
  if (s.h === 0 && s.mi === 0) return `${pad(s.mo)}-${pad(s.d)}`;
  return `${pad(s.h)}:${pad(s.mi)}`;
}

// points: [{ts, min, max, mean, count, last}], the range [from, to] in epoch ms.
export function renderChart(container, { points, from, to, unit, stepMs }) {
  container.replaceChildren();
  const width = Math.max(container.clientWidth || 900, 320);
  const height = Math.max(Math.min(container.clientHeight || 360, 520), 240);
  const pad = { l: 78, r: 24, t: 18, b: 44 };
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "chart", role: "img" });
  container.append(svg);
  const usable = points.filter((p) => p.count > 0 && Number.isFinite(p.mean));
  if (!usable.length) {
    svg.append(el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, t("chart.no_data")));
    return svg;
  }
  const lo0 = Math.min(...usable.map((p) => p.min));
  const hi0 = Math.max(...usable.map((p) => p.max));
  const { ticks, lo, hi } = niceTicks(lo0, hi0);
  const x = (ms) => pad.l + ((ms - from) / (to - from)) * (width - pad.l - pad.r);
  const y = (v) => pad.t + (1 - (v - lo) / (hi - lo)) * (height - pad.t - pad.b);

  for (const v of ticks) {
    svg.append(el("line", { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(el("text", { x: pad.l - 8, y: y(v) + 5, "text-anchor": "end", class: "tick" }, fmtNumber(v)));
  }
  if (unit) svg.append(el("text", { x: 8, y: pad.t + 4, class: "unit" }, unit));
  const span = to - from;
  const tstep = TIME_STEPS.find((s) => span / s <= 8) || 7 * DAY;
  for (let ms = floorShanghai(from, tstep) + tstep; ms < to; ms += tstep) {
    svg.append(el("line", { x1: x(ms), x2: x(ms), y1: pad.t, y2: height - pad.b, class: "grid" }));
    svg.append(el("text", { x: x(ms), y: height - pad.b + 26, "text-anchor": "middle", class: "tick" }, timeLabel(ms, tstep)));
  }

  // Runs of points without a gap wider than three steps: each run its own band and line.
  const gap = Math.max(stepMs || 0, 1) * 3;
  const runs = [];
  for (const p of usable) {
    const run = runs[runs.length - 1];
    if (run && p.ts - run[run.length - 1].ts <= gap) run.push(p);
    else runs.push([p]);
  }
  for (const run of runs) {
    const upper = run.map((p) => `${x(p.ts).toFixed(1)},${y(p.max).toFixed(1)}`);
    const lower = run.slice().reverse().map((p) => `${x(p.ts).toFixed(1)},${y(p.min).toFixed(1)}`);
    if (run.some((p) => p.max > p.min)) svg.append(el("polygon", { points: upper.concat(lower).join(" "), class: "band" }));
    const d = run.map((p, i) => `${i ? "L" : "M"}${x(p.ts).toFixed(1)},${y(p.mean).toFixed(1)}`).join(" ");
    svg.append(el("path", { d, class: "mean" }));
    if (run.length === 1) svg.append(el("circle", { cx: x(run[0].ts), cy: y(run[0].mean), r: 4, class: "dot" }));
  }

  // Hover read-out: the nearest bucket's time, mean and range.
  const cursor = el("line", { y1: pad.t, y2: height - pad.b, class: "cursor", visibility: "hidden" });
  const readout = el("text", { x: pad.l + 8, y: pad.t + 18, class: "readout" });
  svg.append(cursor, readout);
  svg.addEventListener("mousemove", (ev) => {
    const box = svg.getBoundingClientRect();
    const ms = from + ((ev.clientX - box.left) * (width / box.width) - pad.l) / (width - pad.l - pad.r) * span;
    let best = usable[0];
    for (const p of usable) if (Math.abs(p.ts - ms) < Math.abs(best.ts - ms)) best = p;
    cursor.setAttribute("x1", x(best.ts));
    cursor.setAttribute("x2", x(best.ts));
    cursor.setAttribute("visibility", "visible");
    const s = shanghai(best.ts);
    const when = `${String(s.mo).padStart(2, "0")}-${String(s.d).padStart(2, "0")} ${String(s.h).padStart(2, "0")}:${String(s.mi).padStart(2, "0")}`;
    const range = best.max > best.min ? `  (${fmtNumber(best.min)} – ${fmtNumber(best.max)})` : "";
    readout.textContent = `${when}  ${fmtNumber(best.mean)}${unit ? " " + unit : ""}${range}`;
  });
  svg.addEventListener("mouseleave", () => { cursor.setAttribute("visibility", "hidden"); readout.textContent = ""; });
  return svg;
}

// Bars, one a day (or any bucket): [{ts, value, flagged}], a target line at `limit` (dashed),
// flagged bars (e.g. days with an alarm flood) in the alarm colour. Used by the alarm-quality
// page: a month of alarms per day is read at a glance, the bad days stand out.
export function renderBars(container, { bars, from, to, limit, unit, label }) {
  container.replaceChildren();
  const width = Math.max(container.clientWidth || 900, 320);
  const height = 260;
  const pad = { l: 56, r: 16, t: 18, b: 36 };
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "chart bars-chart", role: "img", "aria-label": label || "" });
  container.append(svg);
  const top = Math.max(1, limit || 0, ...bars.map((b) => b.value));
  const { ticks, hi } = niceTicks(0, top, 4);
  const x = (ms) => pad.l + ((ms - from) / (to - from)) * (width - pad.l - pad.r);
  const y = (v) => pad.t + (1 - v / hi) * (height - pad.t - pad.b);
  for (const v of ticks) {
    svg.append(el("line", { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(el("text", { x: pad.l - 6, y: y(v) + 5, "text-anchor": "end", class: "tick" }, fmtNumber(v)));
  }
  if (unit) svg.append(el("text", { x: width - pad.r, y: 12, "text-anchor": "end", class: "unit" }, unit));
  const slot = bars.length > 1 ? (x(bars[1].ts) - x(bars[0].ts)) : (width - pad.l - pad.r);
  const w = Math.max(2, slot * 0.7);
  for (const b of bars) {
    const s = shanghai(b.ts);
    const rect = el("rect", { x: x(b.ts) + (slot - w) / 2, y: y(b.value), width: w, height: Math.max(0, y(0) - y(b.value)), class: b.flagged ? "bar-flag" : "bar-ok", "data-value": b.value });
    rect.append(el("title", {}, `${String(s.mo).padStart(2, "0")}-${String(s.d).padStart(2, "0")}: ${b.value}`));
    svg.append(rect);
    if (s.d === 1 || s.d % 5 === 0) svg.append(el("text", { x: x(b.ts) + slot / 2, y: height - pad.b + 18, "text-anchor": "middle", class: "tick" }, String(s.d)));
  }
  if (limit) svg.append(el("line", { x1: pad.l, x2: width - pad.r, y1: y(limit), y2: y(limit), class: "limit" }));
  return svg;
}
