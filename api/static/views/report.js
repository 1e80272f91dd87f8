// The yearly statistical report (年度统计分析报告): totals, alarms by system and severity,
// rescue times against the deadline, drills held against required, plan activations, and the
// per-estate table; CSV and XLSX downloads with progress.

import { ApiError, download, optional, saveBlob } from "../api.js";
import { errorBox, fill, h, progress, unavailableBox } from "../dom.js";
import { fmtDateTime, fmtNumber, lang, pick, shanghai, t } from "../i18n.js";

const YEARS_BACK = 5;
const SEVERITIES = ["critical", "major", "minor", "warning"];
const LEVELS = ["Ⅳ", "Ⅲ", "Ⅱ", "Ⅰ"];
const ROMAN = { IV: "Ⅳ", III: "Ⅲ", II: "Ⅱ", I: "Ⅰ" };

const num = (v, unit = "") => (v == null ? "—" : `${fmtNumber(v, 1)}${unit}`);
// A new estate's devices are counted once the rollup has folded their first hour: until then
// "not yet measured", not a false 0 %.
const uptime = (p) => (p.device_uptime_pending ? t("report.uptime_pending") : num(p.device_uptime_pct, "%"));
const sumValues = (obj) => Object.values(obj || {}).reduce((n, v) => n + v, 0);

// Per-estate columns, the same figures as the CSV download.
const COLUMNS = [
  ["devices", (p) => num(p.devices)],
  ["alarms_total", (p) => num(p.alarms_total)],
  ["mean_ack_min", (p) => num(p.mean_ack_min)],
  ["mean_resolve_min", (p) => num(p.mean_resolve_min)],
  ["rescues", (p) => `${p.rescues.count} / ${p.rescues.within_deadline} / ${p.rescues.breached}`],
  ["rescue_mean_max", (p) => `${num(p.rescues.mean_min)} / ${num(p.rescues.max_min)}`],
  ["fire_availability_pct", (p) => num(p.fire_availability_pct, "%")],
  ["device_uptime_pct", (p) => uptime(p)],
  ["activations", (p) => num(Object.values(p.activations).reduce((n, lv) => n + sumValues(lv), 0))],
  ["drills", (p) => `${p.drills.reduce((n, d) => n + d.held, 0)} / ${p.drills.reduce((n, d) => n + d.required, 0)}`],
];

// Stacked bars: one row per key, one coloured segment per part.
function stacked(rows, parts, classOf, labelOf) {
  const max = Math.max(1, ...rows.map(([, v]) => parts.reduce((n, p) => n + (v[p] || 0), 0)));
  return h("div", { class: "bars" }, rows.map(([key, v]) => {
    const total = parts.reduce((n, p) => n + (v[p] || 0), 0);
    return h("div", { class: "bar-row" },
      h("span", { class: "bar-label" }, labelOf(key)),
      h("span", { class: "bar" }, parts.map((p) => (v[p] ? h("span", { class: ["fill", classOf(p)], title: `${p}: ${v[p]}`, style: { width: `${(100 * v[p]) / max}%` } }) : null))),
      h("span", { class: "bar-value num" }, total));
  }));
}

function legend(parts, classOf, labelOf) {
  return h("div", { class: "legend" }, parts.map((p) => h("span", {}, h("i", { class: ["swatch", classOf(p)] }), labelOf(p))));
}

export function mount(root, params, app) {
  const now = shanghai(Date.now());
  const thisYear = now.y;
  // In January the report people want is last year's.
  const year = Number(params.year) || (now.mo === 1 ? thisYear - 1 : thisYear);
  const out = h("div", { class: "report" });
  const dl = h("div", { class: "downloads" });
  const yearPick = h("select", { id: "report-year", "aria-label": t("report.year"), onchange: (ev) => { location.hash = `#/report/${ev.target.value}`; } },
    Array.from({ length: YEARS_BACK + 1 }, (_, i) => thisYear - i).map((y) => h("option", { value: y, selected: y === year }, String(y))));
  const buttons = ["csv", "xlsx"].map((fmt) => h("button", { type: "button", class: "download", dataset: { format: fmt }, disabled: true, onclick: () => save(fmt) }, t("report.download." + fmt)));
  root.append(h("div", { class: "page" },
    h("div", { class: "page-head" }, h("h1", {}, t("report.title", { year })), h("div", { class: "links" }, yearPick, buttons)),
    h("p", { class: "muted" }, t("report.explain")),
    dl, out));

  const familyName = (f) => pick(app.catalog.families.find((x) => x.id === f), f);
  let planNames = {};
  const planName = (id) => pick(planNames[id], id);

  function render(data) {
    const tot = data.total;
    const estates = data.estates;
    const alarmRows = Object.entries(tot.alarms).sort((a, b) => sumValues(b[1]) - sumValues(a[1]));
    const actRows = Object.entries(tot.activations).map(([plan, lv]) => [plan, Object.fromEntries(Object.entries(lv).map(([k, n]) => [ROMAN[k] || k, n]))]);
    const rescueMax = Math.max(tot.rescues.deadline_min * 1.25, ...estates.map((p) => p.rescues.max_min || 0));
    fill(out,
      h("p", { class: "muted" }, t("report.generated", { time: fmtDateTime(data.generated_ms), n: estates.length })),
      h("div", { class: "kpi-cards" },
        [["report.kpi.alarms", num(tot.alarms_total)],
          ["report.kpi.mtta", num(tot.mean_ack_min, " min")],
          ["report.kpi.mttr", num(tot.mean_resolve_min, " min")],
          ["report.kpi.rescues", t("report.rescues_value", { n: tot.rescues.count, ok: tot.rescues.within_deadline, late: tot.rescues.breached })],
          ["report.kpi.fire", num(tot.fire_availability_pct, "%")],
          ["report.kpi.uptime", uptime(tot)],
          ["report.kpi.drills", `${tot.drills.reduce((n, d) => n + d.held, 0)} / ${tot.drills.reduce((n, d) => n + d.required, 0)}`]]
          .map(([k, v]) => h("div", { class: "kpi-card" }, h("span", {}, t(k)), h("b", {}, v)))),
      h("div", { class: "figures" },
        h("section", { class: "figure", id: "fig-alarms" }, h("h2", {}, t("report.fig.alarms")),
          alarmRows.length ? [legend(SEVERITIES, (s) => "sev-" + s, (s) => t("severity." + s)), stacked(alarmRows, SEVERITIES, (s) => "sev-" + s, familyName)] : h("p", { class: "muted" }, t("report.empty"))),
        h("section", { class: "figure", id: "fig-rescues" }, h("h2", {}, t("report.fig.rescues", { min: tot.rescues.deadline_min })),
          estates.some((p) => p.rescues.count) ? h("div", { class: "bars" }, estates.filter((p) => p.rescues.count).map((p) => h("div", { class: "bar-row" },
            h("span", { class: "bar-label" }, p.name),
            h("span", { class: "bar deadline-scale" },
              h("span", { class: ["fill", (p.rescues.max_min || 0) > tot.rescues.deadline_min ? "late" : "ok"], style: { width: `${(100 * (p.rescues.max_min || 0)) / rescueMax}%` }, title: t("report.rescue_max") }),
              h("span", { class: "fill mean", style: { width: `${(100 * (p.rescues.mean_min || 0)) / rescueMax}%` }, title: t("report.rescue_mean") }),
              h("span", { class: "deadline-mark", style: { left: `${(100 * tot.rescues.deadline_min) / rescueMax}%` } })),
            h("span", { class: "bar-value num" }, `${num(p.rescues.mean_min)} / ${num(p.rescues.max_min)}`)))) : h("p", { class: "muted" }, t("report.no_rescues"))),
        h("section", { class: "figure", id: "fig-drills" }, h("h2", {}, t("report.fig.drills")),
          h("div", { class: "bars" }, tot.drills.filter((d) => d.required || d.held).map((d) => h("div", { class: "bar-row" },
            h("span", { class: "bar-label" }, planName(d.plan) || d.plan_name),
            h("span", { class: "bar" }, h("span", { class: ["fill", d.short ? "late" : "ok"], style: { width: `${Math.min(100, (100 * d.held) / Math.max(1, d.required))}%` } })),
            h("span", { class: ["bar-value", "num", d.short ? "bad" : null] }, `${d.held}/${d.required}`))))),
        h("section", { class: "figure", id: "fig-activations" }, h("h2", {}, t("report.fig.activations")),
          actRows.length ? [legend(LEVELS, (l) => "lvl-" + (4 - LEVELS.indexOf(l)), (l) => t("plan.level", { level: l })), stacked(actRows, LEVELS, (l) => "lvl-" + (4 - LEVELS.indexOf(l)), planName)] : h("p", { class: "muted" }, t("report.empty")))),
      h("h2", {}, t("report.per_estate")),
      h("div", { class: "table-wrap" }, h("table", { class: "report-table" },
        h("thead", {}, h("tr", {}, h("th", {}, t("authority.estate")), COLUMNS.map(([k]) => h("th", { class: "num" }, t("report.col." + k))))),
        h("tbody", {}, [...estates, tot].map((p) => h("tr", { class: p === tot ? "total" : null },
          h("td", {}, p === tot ? t("report.total") : p.name, p.region ? h("small", { class: "muted" }, " ", p.region) : null),
          COLUMNS.map(([, f]) => h("td", { class: "num" }, f(p)))))))));
  }

  async function save(fmt) {
    const busy = progress(t("report.downloading"));
    dl.replaceChildren(busy.node);
    try {
      const got = await download(`/api/v1/reports/yearly?year=${year}&format=${fmt}&lang=${lang() === "en" ? "en" : "zh-CN"}`, (n, total) => busy.set(n, total));
      busy.finish();
      const name = got.filename || `estatewatch-report-${year}.${fmt}`;
      saveBlob(got.blob, name);
      dl.replaceChildren(h("p", { class: "on saved", dataset: { saved: name } }, t("report.saved", { name, kib: Math.max(1, Math.round(got.blob.size / 1024)) })));
    } catch (exc) {
      busy.finish();
      dl.replaceChildren(exc instanceof ApiError && exc.unavailable ? unavailableBox(t("report.title", { year })) : errorBox(exc, () => save(fmt)));
    }
  }

  async function load() {
    const busy = progress(t("report.generating"));
    out.replaceChildren(busy.node);
    try {
      const [data, plans] = await Promise.all([
        optional(`/api/v1/reports/yearly?year=${year}`),
        optional("/api/v1/plans").catch(() => null), // names in both languages, when the engine runs
      ]);
      busy.finish();
      if (data === null) { out.replaceChildren(unavailableBox(t("report.title", { year }))); return; }
      planNames = Object.fromEntries((plans ? plans.items : []).map((p) => [p.id, p.name]));
      for (const d of data.total.drills) if (!planNames[d.plan]) planNames[d.plan] = { zh: d.plan_name, en: d.plan };
      buttons.forEach((b) => { b.disabled = false; });
      render(data);
      out.dataset.loaded = "1";
    } catch (exc) {
      busy.finish();
      out.replaceChildren(errorBox(exc, load));
    }
  }
  load();
  return {};
}
