// The housing authority's view: every estate in one table, the ones needing attention first.
// A click opens that estate's dashboard (read-only for an authority: the API refuses changes).

import { api } from "../api.js";
import { debounce, errorBox, fill, h, unavailableBox } from "../dom.js";
import { fmtAgo, pick, t } from "../i18n.js";
import { levelBadge } from "./plans.js";

const SEVERITIES = ["critical", "major", "minor", "warning"];
const LEVEL_RANK = { "Ⅰ": 4, "Ⅱ": 3, "Ⅲ": 2, "Ⅳ": 1 };

function attention(r) {
  const a = r.alarms || {};
  const topPlan = Math.max(0, ...(r.plans || []).map((p) => LEVEL_RANK[p.level] || 0));
  return [(r.rescue_breached_open || 0), a.critical || 0, topPlan, r.unacknowledged || 0, a.major || 0, -(r.online_pct ?? 100)];
}

function byAttention(x, y) {
  const a = attention(x);
  const b = attention(y);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return b[i] - a[i];
  return x.name.localeCompare(y.name, "zh-CN");
}

export function mount(root, _params, app) {
  const kpis = h("div", { class: "kpis big" });
  const body = h("tbody", {});
  const status = h("div", {});
  root.append(h("div", { class: "page authority" },
    h("div", { class: "page-head" },
      h("h1", {}, t("authority.title")),
      h("div", { class: "links" },
        h("a", { class: "button", href: "#/report" }, t("nav.report")),
        h("a", { class: "button", href: "#/inspections" }, t("nav.inspections")))),
    kpis, status,
    h("table", { class: "overview" },
      h("thead", {}, h("tr", {},
        h("th", {}, t("authority.estate")),
        SEVERITIES.map((s) => h("th", { class: "num sev-head sev-" + s }, t("severity." + s))),
        h("th", { class: "num" }, t("authority.unacknowledged")),
        h("th", {}, t("authority.plans")),
        h("th", { class: "num" }, t("authority.rescue_breached")),
        h("th", { class: "num" }, t("authority.online")),
        h("th", {}, t("authority.last_data")))),
      body)));

  function row(r) {
    const open = () => app.go(`#/estate/${encodeURIComponent(r.estate)}`);
    const a = r.alarms;
    return h("tr", { class: "estate-row", tabindex: 0, dataset: { estate: r.estate }, onclick: open, onkeydown: (ev) => { if (ev.key === "Enter") open(); } },
      h("td", {}, h("a", { href: `#/estate/${encodeURIComponent(r.estate)}` }, r.name), r.region ? h("small", { class: "muted" }, " ", r.region) : null),
      SEVERITIES.map((s) => h("td", { class: ["num", a && a[s] ? "sev-" + s + " hot" : "muted"] }, a ? a[s] : "—")),
      h("td", { class: ["num", r.unacknowledged ? "bad" : "muted"] }, r.unacknowledged ?? "—"),
      h("td", {}, r.plans === null ? "—" : r.plans.length ? r.plans.map((p) => h("span", { class: "plan-chip" }, levelBadge(p.level), " ", pick(p.plan_name, p.plan),
        p.tasks_overdue ? h("span", { class: "bad" }, " ", t("plan.tasks_overdue", { n: p.tasks_overdue })) : null)) : h("span", { class: "muted" }, t("plan.none_short"))),
      h("td", { class: ["num", r.rescue_breached_open ? "bad" : null] }, r.rescue_breached_open === null ? "—" : `${r.rescue_breached_open} / ${r.rescue_breached_year}`),
      h("td", { class: ["num", r.online_pct != null && r.online_pct < 90 ? "warn" : null] }, r.online_pct == null ? "—" : `${r.online_pct}%`,
        h("small", { class: "muted" }, ` ${r.online}/${r.devices}`)),
      h("td", {}, r.last_data_ms ? fmtAgo(r.last_data_ms) : "—"));
  }

  async function load() {
    try {
      const data = await api("/api/v1/overview");
      const rows = data.items.slice().sort(byAttention);
      body.replaceChildren(...(rows.length ? rows.map(row) : [h("tr", {}, h("td", { colspan: 10, class: "muted" }, t("authority.no_estates")))]));
      const sum = (f) => data.items.reduce((n, r) => n + (f(r) || 0), 0);
      const devices = sum((r) => r.devices);
      fill(kpis, 
        h("span", { class: "kpi" }, t("authority.kpi.estates", { n: data.total })),
        data.alerts_available ? h("span", { class: "kpi" }, t("authority.kpi.alarms", { critical: sum((r) => r.alarms.critical), all: sum((r) => SEVERITIES.reduce((n, s) => n + r.alarms[s], 0)) })) : null,
        data.alerts_available ? h("span", { class: "kpi" }, t("authority.kpi.plans", { n: sum((r) => r.plans.length) })) : null,
        data.alerts_available ? h("span", { class: ["kpi", sum((r) => r.rescue_breached_open) ? "bad" : null] }, t("authority.kpi.breached", { n: sum((r) => r.rescue_breached_open) })) : null,
        h("span", { class: "kpi" }, t("authority.kpi.online", { pct: devices ? (100 * sum((r) => r.online) / devices).toFixed(1) : "—" })));
      status.replaceChildren(data.alerts_available ? "" : unavailableBox(t("authority.alerts")));
    } catch (exc) {
      status.replaceChildren(errorBox(exc, load));
    }
  }
  load();
  const soon = debounce(load, 3000);
  const timer = setInterval(load, 30_000);
  return {
    stream: "/api/v1/stream",
    onLive(name) { if (name === "alarm" || name === "plan" || name === "gateway" || name === "resync") soon(); },
    destroy() { clearInterval(timer); },
  };
}
