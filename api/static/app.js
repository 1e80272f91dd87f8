// The control-room page: session, header, routes (in the URL's #fragment) and the live stream.

import { api, ApiError, LiveStream, session, setToken } from "./api.js";
import { h, errorBox } from "./dom.js";
import { fmtDateTime, lang, loadMessages, setLang, t, translate } from "./i18n.js";
import * as sound from "./sound.js";
import * as adminView from "./views/admin.js";
import * as authorityView from "./views/authority.js";
import * as deviceView from "./views/device.js";
import * as drillsView from "./views/drills.js";
import * as estateView from "./views/estate.js";
import * as familyView from "./views/family.js";
import * as inspectionsView from "./views/inspections.js";
import * as loginView from "./views/login.js";
import * as qualityView from "./views/quality.js";
import * as reportView from "./views/report.js";
import * as silencesView from "./views/silences.js";
import * as warningsView from "./views/warnings.js";

const ROUTES = [
  [/^#\/login$/, loginView, []],
  [/^#\/estate\/([^/]+)$/, estateView, ["estate"]],
  [/^#\/estate\/([^/]+)\/family\/([^/]+)$/, familyView, ["estate", "family"]],
  [/^#\/estate\/([^/]+)\/device\/([^/]+)$/, deviceView, ["estate", "device"]],
  [/^#\/authority$/, authorityView, []],
  [/^#\/inspections$/, inspectionsView, []],
  [/^#\/report(?:\/(\d{4}))?$/, reportView, ["year"]],
  [/^#\/quality(?:\/([^/]+)(?:\/(\d{4}-\d{2}))?)?$/, qualityView, ["estate", "month"]],
  [/^#\/admin$/, adminView, []],
  [/^#\/silences$/, silencesView, []],
  [/^#\/warnings$/, warningsView, []],
  [/^#\/drills(?:\/([^/]+))?$/, drillsView, ["estate"]],
];

// What every view may use: who is logged in, what they may do, the catalog's labels.
export const app = {
  user: null,
  estates: [],
  catalog: null,
  get seesAll() { return this.user && (this.user.role === "admin" || this.user.role === "authority"); },
  get isAdmin() { return this.user && this.user.role === "admin"; },
  canOperate(estate) {
    const u = this.user;
    return !!u && (u.role === "admin" || (u.role === "operator" && u.estates.includes(estate)));
  },
  estateName(id) {
    const e = this.estates.find((x) => x.id === id);
    return e ? e.name : id;
  },
  home: () => home(),
  go(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  },
  notice(message, kind = "error") {
    const box = document.getElementById("notice");
    box.hidden = !message;
    box.className = "notice " + kind;
    box.textContent = message || "";
  },
  // Estates registered after the page loaded (the authority table lists them at once).
  async refreshEstates() {
    this.estates = (await api("/api/v1/estates")).items;
    header();
  },
  async signedIn(user) {
    this.user = user;
    const [estates, catalog] = await Promise.all([api("/api/v1/estates"), api("/api/v1/catalog")]);
    this.estates = estates.items;
    this.catalog = catalog;
    header();
  },
};

let current = null; // {view, hash, handle}
let stream = null; // {path, live: LiveStream}

function home() {
  if (!app.user) return "#/login";
  if (app.seesAll) return "#/authority";
  return app.estates.length ? `#/estate/${encodeURIComponent(app.estates[0].id)}` : "#/login";
}

function setStream(path) {
  if (stream && stream.path === path) return;
  if (stream) stream.live.stop();
  stream = null;
  const live = document.getElementById("live");
  if (!path) { live.hidden = true; return; }
  stream = {
    path,
    live: new LiveStream(path, (name, data) => {
      if (current && current.handle && current.handle.onLive) current.handle.onLive(name, data);
    }, (state, detail) => {
      live.hidden = false;
      live.className = "live " + state;
      live.textContent = t("live." + state);
      live.title = detail || "";
    }).start(),
  };
}

async function route() {
  const hash = location.hash || "#/";
  if (current && current.handle && current.handle.destroy) current.handle.destroy();
  current = null;
  const root = document.getElementById("view");
  root.replaceChildren();
  let match = null;
  for (const [re, view, names] of ROUTES) {
    const m = re.exec(hash);
    if (m) {
      const params = {};
      names.forEach((n, i) => { params[n] = m[i + 1] === undefined ? undefined : decodeURIComponent(m[i + 1]); });
      match = { view, params };
      break;
    }
  }
  if (!app.user && (!match || match.view !== loginView)) { location.replace("#/login"); return; }
  if (!match) { location.replace(home()); return; }
  document.body.dataset.view = hash.split("/")[1] || "";
  markNav(hash);
  try {
    const handle = match.view.mount(root, match.params, app) || {};
    current = { hash, handle };
    setStream(handle.stream || null);
  } catch (exc) {
    root.replaceChildren(errorBox(exc));
  }
}

function markNav(hash) {
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", hash.startsWith(a.getAttribute("href"))));
  const pick = document.getElementById("estate-pick");
  if (pick) {
    const m = /^#\/estate\/([^/]+)/.exec(hash);
    pick.value = m ? decodeURIComponent(m[1]) : "";
  }
}

function header() {
  const nav = document.getElementById("nav");
  nav.replaceChildren();
  const who = document.getElementById("who");
  document.getElementById("logout").hidden = !app.user;
  document.getElementById("sound").hidden = !app.user;
  if (!app.user) { who.textContent = ""; return; }
  who.textContent = app.user.display_name || app.user.username;
  who.title = `${app.user.username} · ${t("role." + app.user.role)}`;
  if (app.seesAll) nav.append(h("a", { href: "#/authority" }, t("nav.overview")));
  if (app.estates.length) {
    nav.append(h("select", {
      id: "estate-pick", "aria-label": t("nav.estate"),
      onchange: (ev) => { if (ev.target.value) app.go(`#/estate/${encodeURIComponent(ev.target.value)}`); },
    }, h("option", { value: "" }, t("nav.pick_estate")), app.estates.map((e) => h("option", { value: e.id }, e.name))));
  }
  if (app.seesAll) {
    nav.append(h("a", { href: "#/inspections" }, t("nav.inspections")));
    nav.append(h("a", { href: "#/report" }, t("nav.report")));
    nav.append(h("a", { href: "#/quality" }, t("nav.quality")));
  }
  // what people do beyond the alarm feed: silences, official warnings, drills
  nav.append(h("a", { href: "#/silences" }, t("nav.silences")));
  nav.append(h("a", { href: "#/warnings" }, t("nav.warnings")));
  nav.append(h("a", { href: "#/drills" }, t("nav.drills")));
  if (app.isAdmin) nav.append(h("a", { href: "#/admin" }, t("nav.admin")));
  markNav(location.hash);
  soundButton();
}

function soundButton() {
  const b = document.getElementById("sound");
  const state = sound.isMuted() ? "muted" : sound.isBlocked() ? "blocked" : "on";
  b.className = "icon sound-" + state;
  b.textContent = t("sound." + state);
  b.title = t("sound." + state + ".title");
}

function tick() {
  document.getElementById("clock").textContent = fmtDateTime(Date.now());
}

function applyLang() {
  document.documentElement.lang = lang();
  document.getElementById("lang").textContent = t("lang.other");
  translate();
  header();
  if (stream) document.getElementById("live").textContent = t("live." + (stream.live.stateName || "connecting"));
}

async function boot() {
  await loadMessages();
  setLang(lang());
  applyLang();
  // `make demo` prints /#token=… with the bootstrap admin's token.
  const m = /^#token=([^&]+)/.exec(location.hash);
  if (m) {
    setToken(decodeURIComponent(m[1]));
    history.replaceState(null, "", "/#/");
  }
  session.onUnauthorized = () => {
    setToken(null);
    app.user = null;
    setStream(null);
    header();
    app.notice(t("login.expired"));
    app.go("#/login");
  };
  document.getElementById("lang").addEventListener("click", () => {
    setLang(lang() === "zh-CN" ? "en" : "zh-CN");
    applyLang();
    route(); // views render their labels again
  });
  document.getElementById("logout").addEventListener("click", async () => {
    try { await api("/api/v1/logout", { method: "POST" }); } catch { /* logging out anyway */ }
    setToken(null);
    app.user = null;
    setStream(null);
    header();
    app.go("#/login");
  });
  document.getElementById("sound").addEventListener("click", () => {
    if (sound.isBlocked()) sound.unlock();
    else sound.setMuted(!sound.isMuted());
  });
  sound.onChange(soundButton);
  // Any touch of the page lets the browser play the alarm sound from then on.
  for (const evName of ["pointerdown", "keydown"]) document.addEventListener(evName, () => sound.unlock(), { capture: true });
  tick();
  setInterval(tick, 1000);
  if (session.token) {
    try {
      await app.signedIn(await api("/api/v1/me"));
    } catch (exc) {
      if (!(exc instanceof ApiError) || exc.status !== 401) app.notice(exc.message);
    }
  }
  window.addEventListener("hashchange", route);
  if (app.user && (location.hash === "" || location.hash === "#/" || location.hash === "#/login")) location.replace(home());
  route();
}

boot().catch((exc) => {
  document.getElementById("view").replaceChildren(errorBox(exc));
});
