// Alarm quality (告警质量): the alarm-management figures of ISA-18.2 / EEMUA 191 per estate and
// month: alarms per hour and per 10 minutes outside declared emergencies, floods, chattering
// and standing alarms, the ten most frequent alarms, time to acknowledge. Admin and authority.

import { optional } from "../api.js";
import { errorBox, fill, h, progress, unavailableBox } from "../dom.js";
import { renderBars } from "../chart.js";
import { fmtDateTime, fmtNumber, shanghai, t } from "../i18n.js";

const DAY = 86_400_000;
const PER_DAY_LIMIT = 144; // 1 alarm per 10 minutes (the target), over a day

const num = (v, digits = 2) => (v == null ? "—" : fmtNumber(v, digits));

function thisMonth() {
  const s = shanghai(Date.now());
  return `${s.y}-${String(s.mo).padStart(2, "0")}`;
}

// Which clock a figure counts on (alerts/quality.py CLOCKS): the operator's load by when an
// alarm reached the control room (wall), the conditions by data time.
const CLOCK_OF = { alarms: "data", per_hour: "wall", per_10min: "wall", floods: "wall", chattering: "data", stale: "data", ack: "wall" };

function card(key, value, good, note) {
  return h("div", { class: ["kpi-card", good == null ? null : good ? "good" : "bad"], dataset: { kpi: key, clock: CLOCK_OF[key] } },
    h("span", {}, t("quality.kpi." + key)), h("b", {}, value), note ? h("small", {}, note) : null,
    CLOCK_OF[key] ? h("small", { class: "clock muted" }, t("quality.clock." + CLOCK_OF[key])) : null);
}

export function mount(root, params, app) {
  const estate = params.estate || "";
  const month = params.month || thisMonth();
  const go = (e, m) => { location.hash = e ? `#/quality/${encodeURIComponent(e)}/${m}` : `#/quality`; };
  const estatePick = h("select", { id: "quality-estate", "aria-label": t("nav.estate"), onchange: (ev) => go(ev.target.value, monthPick.value || month) },
    h("option", { value: "" }, t("quality.all_estates")),
    app.estates.map((e) => h("option", { value: e.id, selected: e.id === estate }, e.name)));
  const monthPick = h("input", { id: "quality-month", type: "month", value: month, "aria-label": t("quality.month"), onchange: (ev) => go(estatePick.value, ev.target.value) });
  const out = h("div", { class: "quality report" });
  root.append(h("div", { class: "page" },
    h("div", { class: "page-head" }, h("h1", {}, t("quality.title")), h("div", { class: "links" }, estatePick, monthPick)),
    h("p", { class: "muted" }, t("quality.explain")),
    out));

  function renderAll(data) {
    fill(out, h("div", { class: "table-wrap" }, h("table", { class: "report-table", id: "quality-estates" },
      h("thead", {}, h("tr", {}, ["estate", "alarms", "per_hour", "per_10min", "floods", "chattering", "stale", "top"].map((k) => h("th", {}, t("quality.col." + k))))),
      h("tbody", {}, data.items.map((e) => h("tr", {},
        h("td", {}, h("a", { href: `#/quality/${encodeURIComponent(e.estate)}/${data.month}` }, e.name)),
        h("td", { class: "num" }, e.alarms),
        h("td", { class: "num" }, num(e.per_hour, 3)),
        h("td", { class: ["num", e.per_10min_outside_emergencies > 1 ? "bad" : null] }, num(e.per_10min_outside_emergencies, 3)),
        h("td", { class: ["num", e.flood_windows ? "bad" : null] }, e.flood_windows),
        h("td", { class: ["num", e.chattering ? "bad" : null] }, e.chattering),
        h("td", { class: ["num", e.stale ? "bad" : null] }, e.stale),
        h("td", {}, e.top.length ? `${e.top[0].rule} · ${e.top[0].subject} (${Math.round(100 * e.top[0].share)}%)` : "—")))))));
  }

  function renderOne(data) {
    const q = data.quality;
    const chart = h("div", { class: "chart-box", id: "quality-chart" });
    const maxTop = Math.max(1, ...q.top.map((x) => x.alarms));
    fill(out,
      h("p", { class: "muted" }, t("quality.period", { name: data.name, from: fmtDateTime(data.start_ms), to: fmtDateTime(data.end_ms) })),
      h("div", { class: "kpi-cards" },
        card("alarms", String(q.alarms)),
        card("per_hour", num(q.per_hour, 3), null, q.late ? t("quality.late_note", { n: q.late }) : null),
        card("per_10min", num(q.per_10min_outside_emergencies, 3), q.per_10min_outside_emergencies <= 1, t("quality.target", { v: "≤ 1" })),
        card("floods", `${q.flood_windows}`, q.flood_windows === 0, t("quality.flood_note", { pct: num(100 * q.flood_share, 2), peak: q.peak_10min })),
        card("chattering", String(q.chattering.length), q.chattering.length === 0, t("quality.target", { v: "0" })),
        card("stale", String(q.stale.length), q.stale.length === 0, t("quality.target", { v: "0" })),
        card("ack", q.ack_p50_s == null ? "—" : `${num(q.ack_p50_s / 60, 1)} / ${num(q.ack_p90_s / 60, 1)} min`, null, [t("quality.ack_note"), q.closed_unacked ? ` · ${t("quality.closed_unacked", { n: q.closed_unacked })}` : ""].join(""))),
      h("div", { class: "figures" },
        h("section", { class: "figure", id: "fig-days" }, h("h2", {}, t("quality.fig.days")), chart,
          h("p", { class: "muted" }, t("quality.fig.days_note", { n: PER_DAY_LIMIT }))),
        h("section", { class: "figure", id: "fig-top" }, h("h2", {}, t("quality.fig.top")),
          q.top.length ? h("div", { class: "bars" }, q.top.map((x) => h("div", { class: "bar-row" },
            h("span", { class: "bar-label", title: x.subject }, `${x.rule} · ${x.subject}`),
            h("span", { class: "bar" }, h("span", { class: "fill", style: { width: `${(100 * x.alarms) / maxTop}%` } })),
            h("span", { class: "bar-value num" }, `${x.alarms} (${Math.round(100 * x.share)}%)`)))) : h("p", { class: "muted" }, t("report.empty")))),
      h("h2", {}, t("quality.chattering")),
      q.chattering.length ? h("ul", { id: "quality-chattering" }, q.chattering.map((x) => h("li", {}, t("quality.chatter_item", { rule: x.rule, subject: x.subject, n: x.in_60s, total: x.alarms })))) : h("p", { class: "muted" }, t("quality.none")),
      h("h2", {}, t("quality.stale")),
      q.stale.length ? h("ul", { id: "quality-stale" }, q.stale.map((x) => h("li", {}, t(x.open ? "quality.stale_open" : "quality.stale_item", { rule: x.rule, subject: x.subject, h: x.active_h, since: fmtDateTime(x.raised_ms) })))) : h("p", { class: "muted" }, t("quality.none")),
      h("h2", {}, t("quality.floods")),
      q.floods.length ? h("ul", { id: "quality-floods" }, q.floods.map((x) => h("li", {}, t("quality.flood_item", { at: fmtDateTime(x.start_ms), n: x.alarms })))) : h("p", { class: "muted" }, t("quality.none")));
    const bars = data.days.map((d) => ({ ts: d.day_ms, value: d.alarms, flagged: d.flood_windows > 0 }));
    renderBars(chart, { bars, from: data.start_ms, to: Math.max(data.end_ms, data.start_ms + bars.length * DAY), limit: PER_DAY_LIMIT, unit: t("quality.per_day"), label: t("quality.fig.days") });
  }

  async function load() {
    const busy = progress(t("app.loading"));
    out.replaceChildren(busy.node);
    try {
      const qs = `month=${encodeURIComponent(month)}` + (estate ? `&estate=${encodeURIComponent(estate)}` : "");
      const data = await optional(`/api/v1/alarm-quality?${qs}`);
      busy.finish();
      if (data === null) { out.replaceChildren(unavailableBox(t("quality.title"))); return; }
      if (estate) renderOne(data); else renderAll(data);
      out.dataset.loaded = "1";
    } catch (exc) {
      busy.finish();
      out.replaceChildren(errorBox(exc, load));
    }
  }
  load();
  return {};
}
