// One device: its latest values (live), its open alarms, and a chart of one metric over the
// last hour, day, week or month.

import { api } from "../api.js";
import { renderChart } from "../chart.js";
import { errorBox, h, progress } from "../dom.js";
import { fmtAgo, fmtDateTime, pick, t } from "../i18n.js";
import { AlarmFeed } from "./alarms.js";
import { SOCKET_KIND, SocketControl } from "./commands.js";
import { metricName, metricValue } from "./family.js";

const RANGES = { hour: 3_600_000, day: 86_400_000, week: 7 * 86_400_000, month: 30 * 86_400_000 };
const NUMERIC = new Set(["number", "integer"]);

export function mount(root, params, app) {
  const { estate, device } = params;
  const head = h("div", { class: "device-head" });
  const latest = h("tbody", {});
  const chartBox = h("div", { class: "chart-box" });
  const chartInfo = h("div", { class: "chart-info" });
  const metricPick = h("select", { id: "metric-pick", "aria-label": t("chart.metric") });
  const rangeButtons = h("div", { class: "ranges", role: "group" });
  const feed = new AlarmFeed(app, estate, { device });
  const socketSlot = h("div", { class: "socket-slot" });
  let socket = null; // the power buttons, once the device is known to be a charging socket
  let dev = null;
  let range = localStorage.getItem("ew.range") || "day";
  let loading = null;

  root.append(h("div", { class: "page device-page" },
    h("nav", { class: "crumbs" }, h("a", { href: `#/estate/${encodeURIComponent(estate)}` }, app.estateName(estate)), " › ", device),
    head,
    h("div", { class: "device-grid" },
      h("section", { class: "panel" }, h("h2", {}, t("device.latest")),
        h("table", { class: "latest" }, h("thead", {}, h("tr", {}, h("th", {}, t("device.metric")), h("th", {}, t("device.value")))), latest),
        socketSlot,
        h("h2", {}, t("alarm.feed")), feed.node),
      h("section", { class: "panel chart-panel" },
        h("div", { class: "chart-controls" }, metricPick, rangeButtons, chartInfo),
        chartBox))));

  for (const [name] of Object.entries(RANGES)) {
    rangeButtons.append(h("button", { type: "button", dataset: { range: name }, class: name === range ? "active" : null, onclick: () => {
      range = name;
      localStorage.setItem("ew.range", name);
      rangeButtons.querySelectorAll("button").forEach((b) => b.classList.toggle("active", b.dataset.range === name));
      loadChart();
    } }, t("chart.range." + name)));
  }
  metricPick.addEventListener("change", loadChart);

  function renderDevice() {
    const kind = app.catalog.kinds[dev.kind];
    head.replaceChildren(
      h("h1", {}, device, " ", h("small", {}, pick(kind, dev.kind))),
      h("div", { class: "kpis" },
        h("span", { class: dev.online ? "on" : "off" }, t(dev.online ? "device.online" : "device.offline")),
        h("span", {}, t("device.family_is", { family: pick(app.catalog.families.find((f) => f.id === dev.family), dev.family || "") })),
        h("span", {}, t("device.gateway_is", { gateway: dev.gateway })),
        h("span", {}, t("device.seen", { time: fmtDateTime(dev.last_seen_ms), ago: fmtAgo(dev.last_seen_ms) }))));
    latest.replaceChildren(...Object.entries(dev.metrics).map(([k, v]) => h("tr", { dataset: { metric: k } },
      h("th", {}, metricName(app, dev.kind, k)), h("td", { class: "value" }, metricValue(app, dev.kind, k, v)))));
  }

  // a point's width: "5 分钟" / "2 小时" / "30 秒"
  function stepText(ms) {
    if (ms % 3600000 === 0) return t("chart.step.h", { n: ms / 3600000 });
    if (ms % 60000 === 0) return t("chart.step.min", { n: ms / 60000 });
    return t("chart.step.s", { n: Math.round(ms / 1000) });
  }

  async function loadChart() {
    const metric = metricPick.value;
    if (!metric) { chartBox.replaceChildren(h("p", { class: "muted" }, t("chart.no_numeric"))); return; }
    if (loading) loading.abort();
    loading = new AbortController();
    // A device that is online but whose newest reading is older than half the range belongs
    // to a gateway replaying a backlog (the demo catching up with the clock, a gateway back
    // from an outage): its range ends at that reading, not at now, so the chart is not empty.
    // An offline device keeps now as the end: its gap is the point.
    const now = Date.now();
    const behind = dev && dev.online && dev.last_seen_ms && now - dev.last_seen_ms > RANGES[range] / 2;
    const to = behind ? dev.last_seen_ms : now;
    const from = to - RANGES[range];
    const maxPoints = Math.max(60, Math.min(720, Math.floor((chartBox.clientWidth || 900) / 2)));
    const q = new URLSearchParams({ metric, from: String(from), to: String(to), max_points: String(maxPoints) });
    const busy = progress(t("chart.loading"));
    chartInfo.replaceChildren(busy.node);
    try {
      const body = await api(`/api/v1/estates/${encodeURIComponent(estate)}/devices/${encodeURIComponent(device)}/telemetry?${q}`, { signal: loading.signal });
      renderChart(chartBox, { points: body.points, from: body.from, to: body.to, unit: body.unit, stepMs: body.step_ms });
      chartInfo.replaceChildren(t("chart.resolution", { res: t("chart.res." + body.resolution), step: stepText(body.step_ms), n: body.points.length }),
        ...(behind ? [h("span", { class: "chart-behind" }, " · ", t("chart.until_latest", { time: fmtDateTime(to), ago: fmtAgo(to) }))] : []));
    } catch (exc) {
      if (exc.name === "AbortError") return;
      chartInfo.replaceChildren();
      chartBox.replaceChildren(errorBox(exc, loadChart));
    } finally {
      busy.finish();
    }
  }

  async function load() {
    try {
      const body = await api(`/api/v1/estates/${encodeURIComponent(estate)}/devices?${new URLSearchParams({ device })}`);
      dev = body.items.find((d) => d.id === device);
      if (!dev) { head.replaceChildren(errorBox({ status: 404, message: t("device.not_found", { device }) })); return; }
      renderDevice();
      if (dev.kind === SOCKET_KIND && app.canOperate(estate) && !socket) {
        socket = new SocketControl(app, estate, device);
        socketSlot.replaceChildren(h("h2", {}, t("command.title")), socket.node);
        socket.load();
      }
      const kind = app.catalog.kinds[dev.kind];
      const numeric = Object.entries(kind ? kind.metrics : {}).filter(([, m]) => NUMERIC.has(m.type));
      const keep = metricPick.value;
      metricPick.replaceChildren(...numeric.map(([name, m]) => h("option", { value: name }, pick(m, name) + (m.unit ? ` (${m.unit})` : ""))));
      if (keep) metricPick.value = keep;
      loadChart();
    } catch (exc) {
      head.replaceChildren(errorBox(exc, load));
    }
  }
  load();
  feed.load();
  // The last hour moves on: redraw it every half minute (longer ranges change too slowly to matter).
  const timer = setInterval(() => { if (range === "hour" && dev) loadChart(); }, 30_000);

  return {
    stream: `/api/v1/estates/${encodeURIComponent(estate)}/stream`,
    onLive(name, data) {
      if (name === "device" && data.dev === device && dev) {
        Object.assign(dev.metrics, data.metrics);
        dev.last_seen_ms = Math.max(dev.last_seen_ms || 0, data.ts);
        dev.online = true;
        renderDevice();
      } else if (name === "alarm") feed.onAlarm(data);
      else if (name === "command") { if (socket) socket.onCommand(data); feed.onCommand(data); }
      else if (name === "resync") { load(); feed.load(); }
    },
    destroy() { clearInterval(timer); feed.destroy(); if (loading) loading.abort(); },
  };
}
