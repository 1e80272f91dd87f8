// For admins: the service's own health, estates (register one; each one's settings: climate
// zone, heating season, lift rescue minutes), every gateway's health and credentials
// (register, disable, enable, rotate, delete), the users (create with a role and estates,
// change role and estates, disable, enable, rotate, delete), and the dead letters (what was
// not stored, and why). New credentials are shown once, in the notice box.

import { api } from "../api.js";
import { errorBox, fill, h } from "../dom.js";
import { fmtAgo, fmtDateTime, fmtNumber, t, tOr } from "../i18n.js";
import { gatewayTable } from "./estate.js";
import { field } from "./forms.js";

const PAGE = 50;
// alerts/zones.yaml: the climate zones an estate may name (low-temperature thresholds and the
// heating season).
const ZONES = ["hohhot", "baotou", "xilingol", "hulunbuir"];
const ROLES = ["operator", "viewer", "authority", "admin"];
const ID_PATTERN = "[a-z0-9][a-z0-9\\-]{0,62}"; // api/routes/estates.py ID_PATTERN
const USERNAME_PATTERN = "[a-z0-9][a-z0-9._\\-]{0,63}"; // api/routes/users.py USERNAME
const MIN_PASSWORD = 10;

// A multi-select of estates (a user's estates); size grows with the list up to 6 rows.
function estatePicker(app, chosen, name = "estates") {
  const pick = h("select", { name, multiple: true, size: Math.min(6, Math.max(2, app.estates.length)) },
    app.estates.map((e) => h("option", { value: e.id, selected: chosen.includes(e.id) }, `${e.name} (${e.id})`)));
  return pick;
}

function picked(select) {
  return [...select.selectedOptions].map((o) => o.value);
}

// One estate's settings as a form: PATCH /api/v1/estates/{id}.
function settingsRow(e) {
  const zone = h("select", { name: "zone" }, h("option", { value: "" }, t("estate.zone.none")),
    ZONES.map((z) => h("option", { value: z }, t("estate.zone." + z))));
  zone.value = e.zone || "";
  const season = h("input", { name: "heating_season", placeholder: t("estate.heating_season.placeholder"), pattern: "\\d\\d-\\d\\d/\\d\\d-\\d\\d", size: 11 });
  season.value = e.heating_season || "";
  const rescue = h("input", { name: "rescue_arrival_min", type: "number", min: 1, max: 240, placeholder: "30", size: 4 });
  rescue.value = e.rescue_arrival_min || "";
  const said = h("span", { class: "muted" });
  return h("form", { class: "estate-settings inline-form", dataset: { estate: e.id }, onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { zone: zone.value, heating_season: season.value.trim(), rescue_arrival_min: rescue.value ? Number(rescue.value) : null };
    try {
      const saved = await api(`/api/v1/estates/${encodeURIComponent(e.id)}`, { method: "PATCH", body });
      Object.assign(e, saved);
      said.replaceChildren(t("estate.settings.saved"));
    } catch (exc) {
      said.replaceChildren(errorBox(exc));
    }
  } },
  h("b", {}, e.name), " ",
  h("label", {}, t("estate.zone"), " ", zone), " ",
  h("label", {}, t("estate.heating_season"), " ", season), " ",
  h("label", {}, t("estate.rescue_arrival_min"), " ", rescue), " ",
  h("button", { type: "submit", class: "primary" }, t("estate.settings.save")), " ", said);
}

export function mount(root, _params, app) {
  const health = h("div", { class: "kpis" });
  const gateways = h("div", {});
  const counts = h("div", { class: "chips" });
  const letters = h("div", {});
  const reason = h("select", { name: "reason", onchange: () => { offset = 0; loadLetters(); } }, h("option", { value: "" }, t("deadletter.all_reasons")));
  const estate = h("select", { name: "estate", onchange: () => { offset = 0; loadLetters(); } }, h("option", { value: "" }, t("deadletter.all_estates")),
    app.estates.map((e) => h("option", { value: e.id }, e.name)));
  const pager = h("div", { class: "pager" });
  const notice = h("div", { id: "credentials-notice", "aria-live": "polite" });
  const people = h("div", {});
  const settings = h("div", {}, app.estates.map(settingsRow));
  const gatewayForm = h("div", {});
  let offset = 0;

  // 新增小区: id, name, region; then every estate list on the page follows.
  function estateForm() {
    const id = h("input", { name: "id", required: true, pattern: ID_PATTERN, maxlength: 63, placeholder: "hohhot-xinhua" });
    const name = h("input", { name: "name", required: true, maxlength: 200, placeholder: t("estate.new.name.placeholder") });
    const region = h("input", { name: "region", maxlength: 100, placeholder: t("estate.new.region.placeholder") });
    const said = h("div", { "aria-live": "polite" });
    const form = h("form", { class: "estate-new inline-form", onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const e = await api("/api/v1/estates", { method: "POST", body: { id: id.value.trim(), name: name.value.trim(), region: region.value.trim() } });
        await app.refreshEstates();
        fill(said, h("p", { class: "ok" }, t("estate.new.done", { name: e.name, id: e.id })));
        form.reset();
        fill(settings, app.estates.map(settingsRow));
        renderGatewayForm();
        loadGateways();
        loadUsers();
      } catch (exc) {
        fill(said, errorBox(exc));
      }
    } },
    h("b", {}, t("estate.new")), " ",
    field(t("estate.new.id"), id, t("estate.new.id.hint")), " ",
    field(t("estate.new.name"), name), " ",
    field(t("estate.new.region"), region), " ",
    h("button", { type: "submit", class: "primary" }, t("estate.new.submit")), said);
    return form;
  }

  // 注册网关: the answer's MQTT credentials are shown once, in the notice box.
  function renderGatewayForm() {
    const estate = h("select", { name: "estate", required: true }, app.estates.map((e) => h("option", { value: e.id }, e.name)));
    const id = h("input", { name: "id", required: true, pattern: ID_PATTERN, maxlength: 63, placeholder: "gw-01" });
    const name = h("input", { name: "name", maxlength: 200, placeholder: t("gateway.new.name.placeholder") });
    const said = h("div", { "aria-live": "polite" });
    fill(gatewayForm, app.estates.length ? h("form", { class: "gateway-new inline-form", onsubmit: async (ev) => {
      ev.preventDefault();
      const e = app.estates.find((x) => x.id === estate.value);
      try {
        const g = await api(`/api/v1/estates/${encodeURIComponent(estate.value)}/gateways`, { method: "POST", body: { id: id.value.trim(), name: name.value.trim() } });
        const who = `${e ? e.name : estate.value} · ${g.id}`;
        if (g.mqtt) shownOnce(t("cred.gateway_new", { who }), [["cred.username", g.mqtt.username], ["cred.password", g.mqtt.password], ["cred.topic_prefix", g.mqtt.topic_prefix], ["cred.port", g.mqtt.port]]);
        else fill(notice, h("p", { class: "ok" }, t("gateway.new.no_broker", { who })));
        fill(said);
        id.value = "";
        name.value = "";
        loadGateways();
      } catch (exc) {
        fill(said, errorBox(exc));
      }
    } },
    h("b", {}, t("gateway.new")), " ",
    field(t("gateway.new.estate"), estate), " ",
    field(t("gateway.new.id"), id), " ",
    field(t("gateway.new.name"), name), " ",
    h("button", { type: "submit", class: "primary" }, t("gateway.new.submit")), said) : null);
  }
  renderGatewayForm();

  // 新增用户: name, role, estates (an operator or viewer needs one), a first password.
  function userForm() {
    const username = h("input", { name: "username", required: true, pattern: USERNAME_PATTERN, maxlength: 64, placeholder: "duty-xinhua" });
    const display = h("input", { name: "display_name", maxlength: 200, placeholder: t("user.display.placeholder") });
    const role = roleSelect();
    const estates = estatePicker(app, []);
    const password = h("input", { name: "password", type: "password", required: true, minlength: MIN_PASSWORD, maxlength: 200, autocomplete: "new-password" });
    const said = h("div", { "aria-live": "polite" });
    const form = h("form", { class: "user-new card", onsubmit: async (ev) => {
      ev.preventDefault();
      const chosen = chosenEstates(role, estates, said);
      if (!chosen) return;
      try {
        const u = await api("/api/v1/users", { method: "POST", body: { username: username.value.trim(), display_name: display.value.trim(), role: role.value, estates: chosen, password: password.value } });
        fill(said, h("p", { class: "ok" }, t("user.created", { who: u.username, role: t("role." + u.role) })));
        form.reset();
        loadUsers();
      } catch (exc) {
        fill(said, errorBox(exc));
      }
    } },
    h("b", {}, t("user.new")),
    h("div", { class: "row" },
      field(t("user.name"), username, t("user.name.hint")),
      field(t("user.display"), display),
      field(t("user.role"), role),
      field(t("user.estates"), estates, t("user.estates.hint")),
      field(t("user.password"), password, t("user.password.hint", { n: MIN_PASSWORD }))),
    h("button", { type: "submit", class: "primary" }, t("user.create")), said);
    return form;
  }

  function roleSelect() {
    return h("select", { name: "role" }, ROLES.map((r) => h("option", { value: r }, t("role." + r))));
  }

  // The estates picked, or null (and why, in `said`) when an operator or viewer has none.
  function chosenEstates(role, estates, said) {
    const chosen = picked(estates);
    if ((role.value === "operator" || role.value === "viewer") && !chosen.length) {
      fill(said, errorBox({ message: t("user.needs_estate") }));
      return null;
    }
    return chosen;
  }

  // 修改: role, estates and name of one user, in a row under it.
  function editRow(u) {
    const display = h("input", { name: "display_name", maxlength: 200, value: u.display_name || "" });
    const role = roleSelect();
    role.value = u.role;
    const estates = estatePicker(app, u.estates);
    const said = h("div", { "aria-live": "polite" });
    return h("tr", { class: "user-edit", dataset: { edit: u.username } }, h("td", { colspan: 6 },
      h("form", { class: "inline-form", onsubmit: async (ev) => {
        ev.preventDefault();
        const chosen = chosenEstates(role, estates, said);
        if (!chosen) return;
        try {
          await api(`/api/v1/users/${encodeURIComponent(u.username)}`, { method: "PATCH", body: { role: role.value, estates: chosen, display_name: display.value.trim() } });
          editing = null;
          fill(notice, h("p", { class: "ok" }, t("user.updated", { who: u.username })));
          loadUsers();
        } catch (exc) {
          fill(said, errorBox(exc));
        }
      } },
      field(t("user.display"), display), " ",
      field(t("user.role"), role), " ",
      field(t("user.estates"), estates), " ",
      h("button", { type: "submit", class: "primary" }, t("user.save")), " ",
      h("button", { type: "button", onclick: () => { editing = null; loadUsers(); } }, t("action.cancel")), said)));
  }
  let editing = null; // the user whose row is open for a change

  root.append(h("div", { class: "page admin" },
    h("h1", {}, t("admin.title")),
    h("h2", {}, t("admin.health")), health,
    notice,
    h("h2", {}, t("estate.settings")),
    h("p", { class: "muted" }, t("estate.settings.explain")),
    settings, estateForm(),
    h("h2", {}, t("gateway.title")), gatewayForm, gateways,
    h("h2", {}, t("admin.users")), userForm(), people,
    h("h2", {}, t("deadletter.title")),
    h("p", { class: "muted" }, t("deadletter.explain")),
    counts, h("div", { class: "filters" }, reason, estate), letters, pager));

  async function loadHealth() {
    try {
      const hz = await api("/healthz");
      const ing = hz.ingest || {};
      const broker = hz.broker || {};
      fill(health, 
        h("span", { class: ["kpi", broker.connected === false ? "bad" : "on"] }, t("admin.broker", { state: t(broker.connected === false ? "admin.disconnected" : "admin.connected") })),
        ing.queue_capacity != null ? h("span", { class: "kpi" }, t("admin.queue", { depth: ing.queue_depth, capacity: ing.queue_capacity })) : null,
        ing.readings != null ? h("span", { class: "kpi" }, t("admin.readings", { n: fmtNumber(ing.readings) })) : null,
        ing.lost_messages != null ? h("span", { class: ["kpi", ing.lost_messages ? "warn" : null] }, t("admin.lost", { n: ing.lost_messages })) : null,
        ing.commit_failures != null ? h("span", { class: ["kpi", ing.commit_failures ? "bad" : null] }, t("admin.commit_failures", { n: ing.commit_failures })) : null,
        ing.last_commit_ms ? h("span", { class: "kpi" }, t("admin.last_commit", { ago: fmtAgo(ing.last_commit_ms) })) : null);
    } catch (exc) {
      fill(health, errorBox(exc, loadHealth));
    }
  }

  async function loadGateways() {
    try {
      const all = await Promise.all(app.estates.map(async (e) => [e, (await api(`/api/v1/estates/${encodeURIComponent(e.id)}/gateways`)).items]));
      gateways.replaceChildren(...all.map(([e, items]) => h("section", { class: "estate-gateways", dataset: { estate: e.id } }, h("h3", {}, e.name),
        gatewayTable(items, { actions: (g) => gatewayActions(e, g) }))));
    } catch (exc) {
      gateways.replaceChildren(errorBox(exc, loadGateways));
    }
  }

  async function loadLetters() {
    try {
      const q = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
      if (reason.value) q.set("reason", reason.value);
      if (estate.value) q.set("estate", estate.value);
      const body = await api(`/api/v1/deadletters?${q}`);
      const keep = reason.value;
      reason.replaceChildren(h("option", { value: "" }, t("deadletter.all_reasons")),
        Object.keys(body.counts).sort().map((r) => h("option", { value: r }, `${tOr("deadletter.reason." + r, r)} (${body.counts[r]})`)));
      reason.value = keep;
      counts.replaceChildren(...Object.entries(body.counts).map(([r, n]) => h("span", { class: "chip" }, tOr("deadletter.reason." + r, r), " ", h("b", {}, n))));
      letters.replaceChildren(body.items.length ? h("table", { class: "deadletters" },
        h("thead", {}, h("tr", {}, ["deadletter.received", "deadletter.reason", "deadletter.topic", "deadletter.detail", "deadletter.payload"].map((k) => h("th", {}, t(k))))),
        h("tbody", {}, body.items.map((d) => h("tr", {},
          h("td", {}, fmtDateTime(d.received_ms)),
          h("td", {}, tOr("deadletter.reason." + d.reason, d.reason)),
          h("td", { class: "mono" }, d.topic, d.item_index != null ? ` #${d.item_index}` : ""),
          // what it means and what to do, in the page's language; the decoder's own (English)
          // detail stays one click away
          h("td", { class: "deadletter-detail" }, tOr("deadletter.hint." + d.reason, d.detail),
            d.detail ? h("details", {}, h("summary", {}, t("deadletter.raw")), h("pre", { class: "raw-detail" }, d.detail)) : null),
          h("td", {}, h("details", {}, h("summary", {}, t("deadletter.show")), h("pre", {}, d.payload))))))) : h("p", { class: "muted" }, t("deadletter.none")));
      pager.replaceChildren(
        h("button", { type: "button", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); loadLetters(); } }, t("action.newer")),
        h("span", {}, ` ${offset + 1}–${offset + body.items.length} `),
        h("button", { type: "button", disabled: body.items.length < PAGE, onclick: () => { offset += PAGE; loadLetters(); } }, t("action.older")));
    } catch (exc) {
      letters.replaceChildren(errorBox(exc, loadLetters));
    }
  }

  // A button that acts at once, or (risky) asks "confirm?" on the first click and acts on
  // the second; the outcome goes to the notice box.
  function act(action, label, run, { confirm = false } = {}) {
    const b = h("button", { type: "button", dataset: { action } }, label);
    let armed = false;
    b.addEventListener("click", async () => {
      if (confirm && !armed) {
        armed = true;
        b.textContent = t("action.confirm", { what: label });
        b.classList.add("armed");
        return;
      }
      b.disabled = true;
      try {
        await run();
      } catch (exc) {
        fill(notice, errorBox(exc));
      } finally {
        b.disabled = false;
      }
    });
    return b;
  }

  function shownOnce(title, rows) {
    fill(notice, h("div", { class: "secret-once", role: "status" },
      h("strong", {}, title), h("p", { class: "muted" }, t("cred.once")),
      h("dl", {}, rows.map(([k, v]) => [h("dt", {}, t(k)), h("dd", { class: "mono", dataset: { field: k } }, String(v))]))));
  }

  function gatewayActions(e, g) {
    const base = `/api/v1/estates/${encodeURIComponent(e.id)}/gateways/${encodeURIComponent(g.id)}`;
    const who = `${e.name} · ${g.id}`;
    const showCreds = (creds) => creds
      ? shownOnce(t("cred.gateway_new", { who }), [["cred.username", creds.username], ["cred.password", creds.password], ["cred.topic_prefix", creds.topic_prefix], ["cred.port", creds.port]])
      : fill(notice, h("p", { class: "ok" }, t("cred.gateway_enabled", { who })));
    const disabled = g.access === "disabled";
    return [
      h("span", { class: ["access", disabled ? "bad" : "on"], dataset: { access: g.access || "enabled" } }, t("gateway.access." + (g.access || "enabled"))), " ",
      disabled
        ? act("enable", t("action.enable"), async () => { showCreds((await api(`${base}/enable`, { method: "POST" })).mqtt); loadGateways(); })
        : act("disable", t("action.disable"), async () => {
          await api(`${base}/disable`, { method: "POST" });
          fill(notice, h("p", { class: "ok" }, t("cred.gateway_disabled", { who })));
          loadGateways();
        }, { confirm: true }),
      " ",
      disabled ? null : act("rotate", t("action.rotate"), async () => { showCreds((await api(`${base}/rotate`, { method: "POST" })).mqtt); loadGateways(); }, { confirm: true }),
      " ",
      act("delete", t("action.delete"), async () => {
        await api(base, { method: "DELETE" });
        fill(notice, h("p", { class: "ok" }, t("cred.gateway_deleted", { who })));
        loadGateways();
      }, { confirm: true }),
    ];
  }

  async function loadUsers() {
    try {
      const { items } = await api("/api/v1/users");
      if (!items.length) { fill(people, h("p", { class: "muted" }, t("user.none"))); return; }
      const base = (u) => `/api/v1/users/${encodeURIComponent(u.username)}`;
      fill(people, h("table", { class: "users" },
        h("thead", {}, h("tr", {}, ["user.name", "user.display", "user.role", "user.estates", "user.status", "user.actions"].map((k) => h("th", {}, t(k))))),
        h("tbody", {}, items.map((u) => [h("tr", { dataset: { user: u.username }, class: u.disabled ? "muted" : null },
          h("td", { class: "mono" }, u.username),
          h("td", {}, u.display_name || "—"),
          h("td", {}, tOr("role." + u.role, u.role)),
          h("td", { class: "estates" }, u.estates.length ? u.estates.map((e) => app.estateName(e)).join("、") : "—"),
          h("td", { class: u.disabled ? "bad" : "on", dataset: { status: u.disabled ? "disabled" : "enabled" } }, t(u.disabled ? "user.disabled" : "user.enabled")),
          h("td", { class: "actions" },
            h("button", { type: "button", dataset: { action: "edit" }, onclick: () => { editing = editing === u.username ? null : u.username; loadUsers(); } }, t("user.edit")),
            " ",
            u.disabled
              ? act("enable", t("action.enable"), async () => { await api(`${base(u)}/enable`, { method: "POST" }); loadUsers(); })
              : act("disable", t("action.disable"), async () => {
                await api(`${base(u)}/disable`, { method: "POST" });
                fill(notice, h("p", { class: "ok" }, t("cred.user_disabled", { who: u.username })));
                loadUsers();
              }, { confirm: true }),
            " ",
            act("rotate", t("action.rotate"), async () => {
              const r = await api(`${base(u)}/rotate`, { method: "POST" });
              shownOnce(t("cred.user_new", { who: u.username }), [["cred.username", r.username], ["cred.password", r.password]]);
            }, { confirm: true }),
            " ",
            act("delete", t("action.delete"), async () => {
              await api(base(u), { method: "DELETE" });
              fill(notice, h("p", { class: "ok" }, t("cred.user_deleted", { who: u.username })));
              loadUsers();
            }, { confirm: true }))),
          editing === u.username ? editRow(u) : null]))));
    } catch (exc) {
      fill(people, errorBox(exc, loadUsers));
    }
  }

  loadHealth();
  loadGateways();
  loadUsers();
  loadLetters();
  const timer = setInterval(() => {
    loadHealth();
    loadGateways();
    if (offset === 0) loadLetters(); // the newest page follows what arrives
  }, 15_000);
  return { destroy() { clearInterval(timer); } };
}
