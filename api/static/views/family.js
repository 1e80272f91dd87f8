// The devices of one family in one estate, with their latest values, updated live.

import { apiPages, optional } from "../api.js";
import { errorBox, h } from "../dom.js";
import { fmtAgo, fmtNumber, pick, t, tOr } from "../i18n.js";
import { alarmsPath } from "./alarms.js";

// "0.31 MPa", "是", "充电中": a value as a person reads it, by the catalog's metric type.
export function metricValue(app, kind, metric, value) {
  const m = app.catalog.kinds[kind] && app.catalog.kinds[kind].metrics[metric];
  if (typeof value === "boolean" || (m && m.type === "boolean")) return t(value ? "value.yes" : "value.no");
  if (m && m.type === "enum") return tOr("enum." + value, String(value));
  if (typeof value === "number") return m && m.unit ? `${fmtNumber(value)} ${m.unit}` : fmtNumber(value);
  return String(value);
}

export function metricName(app, kind, metric) {
  const m = app.catalog.kinds[kind] && app.catalog.kinds[kind].metrics[metric];
  return m ? pick(m, metric) : metric;
}

export function metricsLine(app, d) {
  return Object.entries(d.metrics).map(([k, v]) => h("span", { class: "mv" }, h("small", {}, metricName(app, d.kind, k)), " ", metricValue(app, d.kind, k, v)));
}

export function mount(root, params, app) {
  const { estate, family } = params;
  const fam = app.catalog.families.find((f) => f.id === family);
  const body = h("tbody", {});
  const status = h("div", {});
  const devices = new Map();
  let alarmed = new Set();
  root.append(h("div", { class: "page" },
    h("nav", { class: "crumbs" }, h("a", { href: `#/estate/${encodeURIComponent(estate)}` }, app.estateName(estate)), " › ", fam ? pick(fam) : family),
    h("h1", {}, fam ? pick(fam) : family),
    status,
    h("table", { class: "devices" },
      h("thead", {}, h("tr", {}, ["device.id", "device.kind", "gateway.one", "device.status", "device.latest", "device.last_seen"].map((k) => h("th", {}, t(k))))),
      body)));

  function row(d) {
    return h("tr", { dataset: { dev: d.id }, class: [d.online ? null : "offline", alarmed.has(d.id) ? "alarmed" : null] },
      h("td", {}, h("a", { href: `#/estate/${encodeURIComponent(estate)}/device/${encodeURIComponent(d.id)}` }, d.id)),
      h("td", {}, pick(app.catalog.kinds[d.kind], d.kind)),
      h("td", {}, d.gateway),
      h("td", { class: d.online ? "on" : "off" }, t(d.online ? "device.online" : "device.offline"), alarmed.has(d.id) ? h("span", { class: "in-alarm" }, " ▲ ", t("device.in_alarm")) : null),
      h("td", { class: "metrics" }, metricsLine(app, d)),
      h("td", {}, d.last_seen_ms ? fmtAgo(d.last_seen_ms) : "—"));
  }

  function render() {
    const list = [...devices.values()];
    body.replaceChildren(...(list.length ? list.map(row) : [h("tr", {}, h("td", { colspan: 6, class: "muted" }, t("device.none")))]));
  }

  async function load() {
    try {
      const q = new URLSearchParams({ family });
      const [got, alarms] = await Promise.all([
        apiPages(`/api/v1/estates/${encodeURIComponent(estate)}/devices?${q}`),
        optional(alarmsPath(estate, ["firing", "acknowledged"])),
      ]);
      devices.clear();
      for (const d of got.items) devices.set(d.id, d);
      alarmed = new Set(alarms ? alarms.items.map((a) => a.device).filter(Boolean) : []);
      status.replaceChildren();
      render();
    } catch (exc) {
      status.replaceChildren(errorBox(exc, load));
    }
  }
  load();
  const timer = setInterval(load, 30_000);

  return {
    stream: `/api/v1/estates/${encodeURIComponent(estate)}/stream`,
    onLive(name, data) {
      if (name === "device" && devices.has(data.dev)) {
        const d = devices.get(data.dev);
        Object.assign(d.metrics, data.metrics);
        d.last_seen_ms = Math.max(d.last_seen_ms || 0, data.ts);
        d.online = true;
        const old = body.querySelector(`tr[data-dev="${CSS.escape(d.id)}"]`);
        if (old) old.replaceWith(row(d));
      } else if (name === "alarm" || name === "resync") load();
    },
    destroy() { clearInterval(timer); },
  };
}
