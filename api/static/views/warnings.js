// Official weather warnings (气象预警信号): the authority (or an admin) posts one for some
// estates or a region, with hazard, colour and the time it is valid until; the plans of the
// estates it covers follow at once. Listed with who posted it; lifted early by "解除".

import { api } from "../api.js";
import { errorBox, fill, h } from "../dom.js";
import { fmtDateTime, t, tOr } from "../i18n.js";
import { capped, confirmButton, dateTimeInput, field, fromLocalValue, outcome } from "./forms.js";

const HAZARDS = ["snowstorm", "cold_wave", "low_temperature", "strong_wind", "sandstorm", "rainstorm", "road_icing"];
const LEVELS = ["blue", "yellow", "orange", "red"];

export function mount(root, _params, app) {
  const mayPost = app.seesAll; // admin or authority: the API's "authority" access
  const said = outcome();
  const list = h("div", { class: "warning-list" });
  const showAll = h("input", { type: "checkbox", name: "show_all", onchange: () => load() });
  let cap = 50;

  const hazard = h("select", { name: "hazard", required: true }, HAZARDS.map((x) => h("option", { value: x }, tOr("hazard." + x, x))));
  const level = h("select", { name: "level", required: true }, LEVELS.map((x) => h("option", { value: x }, t("weather.level." + x))));
  level.value = "yellow";
  const estates = h("select", { name: "estates", multiple: true, size: Math.min(6, Math.max(2, app.estates.length)) },
    app.estates.map((e) => h("option", { value: e.id }, e.name)));
  const region = h("input", { name: "region", maxlength: 100, placeholder: t("warning.region.placeholder") });
  const issued = dateTimeInput("issued", Date.now(), { required: true });
  const expires = dateTimeInput("expires", Date.now() + 24 * 3600_000, { required: true });
  const source = h("input", { name: "source", maxlength: 200, placeholder: t("warning.source.placeholder") });
  const text = h("textarea", { name: "text", maxlength: 2000, rows: 2, cols: 50 });

  const form = h("form", { class: "warning-form card", onsubmit: async (ev) => {
    ev.preventDefault();
    said.clear();
    const chosen = [...estates.selectedOptions].map((o) => o.value);
    const from = fromLocalValue(issued.value);
    const until = fromLocalValue(expires.value);
    if (!chosen.length && !region.value.trim()) { said.error({ message: t("warning.needs_cover") }); return; }
    if (from === null || until === null) { said.error({ message: t("warning.bad_time") }); return; }
    if (until <= from) { said.error({ message: t("warning.bad_end") }); return; }
    if (until <= Date.now()) { said.error({ message: t("warning.expired_already") }); return; }
    const body = { hazard: hazard.value, level: level.value, estates: chosen, region: region.value.trim(), issued_ms: from, expires_ms: until, source: source.value.trim(), text: text.value.trim() };
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const w = await api("/api/v1/warnings", { method: "POST", body });
      said.ok(t("warning.posted", { hazard: tOr("hazard." + w.hazard, w.hazard), level: t("weather.level." + w.level), until: fmtDateTime(w.expires_ms) }));
      load();
    } catch (exc) {
      said.error(exc);
    } finally {
      submit.disabled = false;
    }
  } },
  h("h2", {}, t("warning.new")),
  h("div", { class: "row" }, field(t("warning.hazard"), hazard), field(t("warning.level"), level)),
  h("div", { class: "row" },
    field(t("warning.estates"), estates, t("warning.estates.hint")),
    field(t("warning.region"), region, t("warning.region.hint"))),
  h("div", { class: "row" }, field(t("warning.issued"), issued), field(t("warning.expires"), expires)),
  field(t("warning.source"), source),
  field(t("warning.text"), text),
  h("button", { type: "submit", class: "primary" }, t("warning.post")),
  said.node);

  root.append(h("div", { class: "page warnings" },
    h("h1", {}, t("warning.title")),
    h("p", { class: "muted" }, t("warning.explain")),
    mayPost ? form : null,
    h("h2", {}, t("warning.list")),
    h("label", {}, showAll, " ", t("warning.show_all")),
    list));

  function covers(w) {
    const names = w.estates.map((e) => app.estateName(e));
    return [w.region, names.join("、")].filter(Boolean).join(" · ") || "—";
  }

  function row(w, now) {
    const state = w.cancelled_ms ? "cancelled" : w.expires_ms <= now ? "expired" : w.issued_ms > now ? "future" : "active";
    const slot = h("div", {});
    return h("tr", { dataset: { warning: w.id, state }, class: state === "active" ? null : "muted" },
      h("td", {}, tOr("hazard." + w.hazard, w.hazard)),
      h("td", {}, h("span", { class: ["wx", "wx-" + w.level] }, t("weather.level." + w.level))),
      h("td", {}, covers(w)),
      h("td", {}, fmtDateTime(w.issued_ms)),
      h("td", {}, fmtDateTime(w.expires_ms)),
      h("td", {}, w.source || "—", w.text ? h("div", { class: "muted" }, w.text) : null),
      h("td", {}, w.created_by),
      h("td", { class: "state" }, t("warning.state." + state)),
      h("td", { class: "actions" }, mayPost && (state === "active" || state === "future") ? confirmButton(t("warning.cancel"), async () => {
        await api(`/api/v1/warnings/${encodeURIComponent(w.id)}`, { method: "DELETE" });
        said.ok(t("warning.cancelled", { hazard: tOr("hazard." + w.hazard, w.hazard) }));
        load();
      }, { slot, action: "cancel" }) : null, slot));
  }

  async function load() {
    try {
      const body = await api("/api/v1/warnings" + (showAll.checked ? "" : "?active=true"));
      const now = Date.now();
      const items = body.items.slice().sort((a, b) => b.issued_ms - a.issued_ms);
      fill(list, items.length ? h("table", { class: "warnings-table" },
        h("thead", {}, h("tr", {}, ["warning.hazard", "warning.level", "warning.covers", "warning.issued", "warning.expires", "warning.source", "silence.by", "silence.state", "user.actions"].map((k) => h("th", {}, t(k))))),
        h("tbody", {}, capped(items, (w) => row(w, now), { cap, colspan: 9, onMore: () => { cap += 50; load(); } }))) : h("p", { class: "muted" }, t("warning.none")));
    } catch (exc) {
      fill(list, errorBox(exc, load));
    }
  }
  load();
  const timer = setInterval(load, 30_000);
  return { destroy() { clearInterval(timer); } };
}
