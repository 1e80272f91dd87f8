// One estate on the wall: device families, weather levels, gateways, the live alarm feed, the
// active emergency plan and the latest device events.

import { api } from "../api.js";
import { debounce, errorBox, fill, h, unavailableBox } from "../dom.js";
import { fmtAgo, fmtTime, pick, t, tOr } from "../i18n.js";
import { AlarmFeed } from "./alarms.js";
import { PlanPanel } from "./plans.js";

const HAZARDS = ["snowstorm", "cold_wave", "low_temperature", "strong_wind", "sandstorm", "rainstorm", "road_icing"];
const RECENT_EVENTS = 12;
const TITLE = document.title;

export function weatherChips(weather) {
  if (weather === null) return unavailableBox(t("weather.title"));
  const byHazard = new Map((weather || []).map((w) => [w.hazard, w]));
  return h("div", { class: "weather" }, HAZARDS.map((hz) => {
    const w = byHazard.get(hz);
    const level = w ? w.level : "none";
    const where = w && w.level !== "none" ? [w.observed !== "none" ? t("weather.observed") : null, w.official !== "none" ? t("weather.official") : null].filter(Boolean).join(" + ") : "";
    return h("span", { class: ["wx", "wx-" + level], dataset: { hazard: hz, level } },
      h("span", { class: "hz" }, tOr("hazard." + hz, hz)), " ", h("b", {}, t("weather.level." + level)), where ? h("small", {}, " ", where) : null);
  }));
}

const NUMERIC_COLS = new Set(["gateway.buffered", "gateway.max_seq", "gateway.lost", "gateway.duplicates"]);

// compact: the dashboard's narrow column (state time and firmware as a tooltip).
// actions(g): an extra last cell (the admin page's credential buttons)
export function gatewayTable(gateways, { compact = false, actions = null } = {}) {
  if (!gateways.length) return h("p", { class: "muted" }, t("gateway.none"));
  const cols = compact
    ? ["gateway.one", "gateway.state", "gateway.buffered", "gateway.lost", "gateway.duplicates"]
    : ["gateway.one", "gateway.state", "gateway.since", "gateway.buffered", "gateway.max_seq", "gateway.lost", "gateway.duplicates", "gateway.fw"];
  if (actions) cols.push("gateway.access");
  return h("table", { class: ["gateways", compact ? "compact" : null] },
    h("thead", {}, h("tr", {}, cols.map((k) => h("th", { class: NUMERIC_COLS.has(k) ? "num" : null }, t(k))))),
    h("tbody", {}, gateways.map((g) => h("tr", {
      dataset: { gateway: g.id }, class: g.state === "offline" ? "bad" : null,
      title: compact ? `${t("gateway.since")} ${g.state_ms ? fmtAgo(g.state_ms) : "—"} · ${t("gateway.max_seq")} ${g.max_seq ?? "—"} · ${t("gateway.fw")} ${g.fw || "—"}` : null,
    },
    h("td", {}, g.name && !compact ? `${g.name} (${g.id})` : g.id),
    h("td", { class: g.state === "online" ? "on" : g.state === "offline" ? "off" : "muted" }, t("gateway.state." + (g.state || "unknown"))),
    compact ? null : h("td", {}, g.state_ms ? fmtAgo(g.state_ms) : "—"),
    h("td", { class: g.buffered ? "warn num" : "num" }, g.buffered ?? "—"),
    compact ? null : h("td", { class: "num" }, g.max_seq ?? "—"),
    h("td", { class: g.lost_messages ? "bad num" : "num" }, g.lost_messages ?? 0),
    h("td", { class: "num" }, g.duplicates ?? 0),
    compact ? null : h("td", {}, g.fw || "—"),
    actions ? h("td", { class: "actions" }, actions(g)) : null))));
}

export function mount(root, params, app) {
  const estate = params.estate;
  if (!app.estates.some((e) => e.id === estate)) {
    const wait = h("p", { class: "loading" }, t("app.loading"));
    root.append(wait);
    app.refreshEstates().then(() => {
      if (app.estates.some((e) => e.id === estate)) app.go(location.hash); // draw it now
      else wait.replaceWith(errorBox({ status: 404, message: t("estate.not_found", { estate }) }));
    }, (exc) => wait.replaceWith(errorBox(exc)));
    return {};
  }
  const readOnly = !app.canOperate(estate);
  const info = h("div", { class: "estate-info" });
  const weather = h("div", { class: "weather-slot" });
  const families = h("div", { class: "families" });
  const gateways = h("div", { class: "gateway-slot" });
  const events = h("ol", { class: "events", "aria-labelledby": "events-title", "aria-live": "polite" });
  const alarmCount = h("span", { class: "count" });
  const feed = new AlarmFeed(app, estate, {
    // pending alarms are shown (dimmed) but not counted: their condition has not held long enough
    onChange: (items) => {
      const n = items.filter((a) => a.state !== "pending").length;
      alarmCount.textContent = n ? String(n) : "";
      // The tab's title counts them too, for a browser tab in the background.
      document.title = `${n ? `(${n}) ` : ""}${app.estateName(estate)} · ${t("app.title")}`;
    },
  });
  const plans = new PlanPanel(app, estate);
  const recent = [];

  root.append(h("div", { class: "dashboard" },
    h("section", { class: "strip" },
      h("h1", {}, app.estateName(estate)),
      readOnly ? h("span", { class: "badge readonly" }, t("estate.read_only")) : null,
      info, weather,
      h("a", { class: "button", href: `#/drills/${encodeURIComponent(estate)}` }, t("nav.drills"))),
    h("section", { class: "panel p-families" }, h("h2", {}, t("family.title")), families,
      h("h2", {}, t("gateway.title")), gateways),
    h("section", { class: "panel p-alarms" }, h("h2", {}, t("alarm.feed"), " ", alarmCount), feed.node,
      h("h2", { id: "events-title" }, t("event.recent")), events),
    h("section", { class: "panel p-plan" }, h("h2", {}, t("plan.title")), plans.node)));

  function renderSummary(s) {
    fill(info, 
      h("span", { class: "kpi" }, t("estate.devices_online", { online: s.devices.online, total: s.devices.total })),
      h("span", { class: "kpi" }, t("estate.last_data", { ago: s.last_data_ms ? fmtAgo(s.last_data_ms) : "—" })),
      s.estate.region ? h("span", { class: "kpi muted" }, s.estate.region) : null);
    weather.replaceChildren(weatherChips(s.weather));
    families.replaceChildren(...s.families.map((f) => h("a", {
      class: ["family", f.total === 0 ? "empty" : null, f.in_alarm ? "alarmed" : null],
      href: `#/estate/${encodeURIComponent(estate)}/family/${encodeURIComponent(f.family)}`,
      dataset: { family: f.family },
    },
    h("span", { class: "name" }, pick(f)),
    h("span", { class: "total" }, f.total),
    h("span", { class: "counts" },
      h("span", { class: "on", title: t("device.online") }, "● ", f.online),
      h("span", { class: f.offline ? "off" : "muted", title: t("device.offline") }, "○ ", f.offline),
      h("span", { class: f.in_alarm ? "in-alarm" : "muted", title: t("device.in_alarm") }, "▲ ", f.in_alarm)))));
    gateways.replaceChildren(gatewayTable(s.gateways, { compact: true }));
  }

  let summaryError = null;
  async function loadSummary() {
    try {
      renderSummary(await api(`/api/v1/estates/${encodeURIComponent(estate)}/summary`));
      if (summaryError) { summaryError.remove(); summaryError = null; }
    } catch (exc) {
      if (!summaryError) { summaryError = errorBox(exc, loadSummary); families.before(summaryError); }
    }
  }
  const soon = debounce(loadSummary, 3000);

  // The latest events come from the API first (an event that came before the page opened,
  // or while the stream reconnected, is listed too), then from the live stream.
  const eventKey = (e) => `${e.dev}|${e.type}|${e.ts}`;
  function addEvents(items) {
    const seen = new Set(recent.map(eventKey));
    for (const e of items) if (!seen.has(eventKey(e))) { recent.push(e); seen.add(eventKey(e)); }
    recent.sort((a, b) => b.ts - a.ts);
    recent.length = Math.min(recent.length, RECENT_EVENTS);
    renderEvents();
  }
  let eventsError = null;
  async function loadEvents() {
    try {
      const body = await api(`/api/v1/estates/${encodeURIComponent(estate)}/events?limit=${RECENT_EVENTS}`);
      addEvents(body.items);
      if (eventsError) { eventsError.remove(); eventsError = null; }
    } catch (exc) {
      if (!eventsError) { eventsError = errorBox(exc, loadEvents); events.before(eventsError); }
    }
  }

  function renderEvents() {
    events.replaceChildren(...(recent.length ? recent : [null]).map((e) => e ? h("li", {},
      h("time", {}, fmtTime(e.ts)), " ",
      h("b", {}, pick(app.catalog.event_types[e.type], e.type)), " · ",
      h("a", { href: `#/estate/${encodeURIComponent(estate)}/device/${encodeURIComponent(e.dev)}` }, e.dev)) : h("li", { class: "muted" }, t("event.none"))));
  }

  loadSummary();
  feed.load();
  plans.load();
  renderEvents();
  loadEvents();
  const timer = setInterval(loadSummary, 15_000); // online turns offline by time alone

  return {
    stream: `/api/v1/estates/${encodeURIComponent(estate)}/stream`,
    onLive(name, data) {
      if (name === "alarm") { feed.onAlarm(data); soon(); }
      else if (name === "command") feed.onCommand(data);
      else if (name === "plan") plans.onPlan(data);
      else if (name === "event") addEvents([data]); else if (name === "device" || name === "gateway") soon();
      else if (name === "resync") { loadSummary(); feed.load(); plans.load(); loadEvents(); }
    },
    destroy() {
      document.title = TITLE;
      clearInterval(timer);
      feed.destroy();
      plans.destroy();
    },
  };
}
