// Silences (静默): mute the alarms of an estate that match every condition, for a time
// window (lift inspection, a drill). Operators of the estate and admins create and expire
// them; everyone else sees them. Matchers: =, !=, and RE2 regular expressions (=~, !~); a
// pattern RE2 refuses comes back 422 with the reason, shown under the form.

import { api } from "../api.js";
import { errorBox, fill, h } from "../dom.js";
import { fmtDateTime, t, tOr } from "../i18n.js";
import { capped, confirmButton, dateTimeInput, estateOptions, field, fromLocalValue, outcome } from "./forms.js";

const LABELS = ["rule", "device", "subject", "kind", "gateway", "severity"];
const OPS = ["=", "!=", "=~", "!~"];
const MAX_MATCHERS = 20;
const MAX_VALUE = 200; // alerts/silences.py MAX_VALUE_LEN

function matcherText(m) {
  return `${tOr("silence.label." + m.name, m.name)} ${m.op} ${m.value}`;
}

export function mount(root, _params, app) {
  const canCreate = app.isAdmin || app.estates.some((e) => app.canOperate(e.id));
  const list = h("div", { class: "silence-list" });
  const listNote = h("div", {});
  const showAll = h("input", { type: "checkbox", name: "show_all", onchange: () => load() });
  const said = outcome();
  let cap = 50;

  const estate = h("select", { name: "estate", required: true },
    app.isAdmin ? h("option", { value: "*" }, t("silence.all_estates")) : null,
    estateOptions(app));
  if (app.estates.length && app.canOperate(app.estates[0].id)) estate.value = app.estates[0].id;
  const rows = h("div", { class: "matchers" });
  const starts = dateTimeInput("starts", Date.now(), { required: true });
  const ends = dateTimeInput("ends", null);
  const duration = h("input", { type: "number", name: "duration_min", min: 1, max: 60 * 24 * 90, value: "60", size: 6 });
  const comment = h("input", { name: "comment", required: true, maxlength: 500, size: 40, placeholder: t("silence.comment.placeholder") });

  function matcherRow() {
    const name = h("select", { name: "m_name", "aria-label": t("silence.label") }, LABELS.map((l) => h("option", { value: l }, tOr("silence.label." + l, l))));
    const op = h("select", { name: "m_op", "aria-label": t("silence.op") }, OPS.map((o) => h("option", { value: o }, t("silence.op." + o))));
    const value = h("input", { name: "m_value", required: true, maxlength: MAX_VALUE, "aria-label": t("silence.value"), placeholder: t("silence.value.placeholder") });
    const row = h("div", { class: "matcher-row" }, name, " ", op, " ", value, " ",
      h("button", { type: "button", class: "remove", "aria-label": t("silence.remove_matcher"), onclick: () => {
        if (rows.children.length > 1) row.remove();
      } }, "×"));
    return row;
  }
  rows.append(matcherRow());

  const form = h("form", { class: "silence-form card", onsubmit: async (ev) => {
    ev.preventDefault();
    said.clear();
    const matchers = [...rows.querySelectorAll(".matcher-row")].map((r) => ({
      name: r.querySelector("[name=m_name]").value,
      op: r.querySelector("[name=m_op]").value,
      value: r.querySelector("[name=m_value]").value.trim(),
    }));
    const from = fromLocalValue(starts.value);
    const until = fromLocalValue(ends.value);
    if (from === null) { said.error({ message: t("silence.bad_start") }); return; }
    if (until !== null && until <= from) { said.error({ message: t("silence.bad_end") }); return; }
    if (matchers.some((m) => !m.value)) { said.error({ message: t("silence.empty_value") }); return; }
    const body = { matchers, starts_ms: from, comment: comment.value.trim() };
    if (estate.value !== "*") body.estate = estate.value;
    if (until !== null) body.ends_ms = until;
    else body.duration_min = Number(duration.value) || 60;
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const s = await api("/api/v1/silences", { method: "POST", body });
      said.ok(t("silence.created", { id: s.id, until: fmtDateTime(s.ends_ms) }));
      comment.value = "";
      load();
    } catch (exc) {
      said.error(exc);
    } finally {
      submit.disabled = false;
    }
  } },
  h("h2", {}, t("silence.new")),
  field(t("silence.estate"), estate),
  h("fieldset", {}, h("legend", {}, t("silence.matchers")), h("p", { class: "muted" }, t("silence.matchers.explain")), rows,
    h("button", { type: "button", class: "add-matcher", onclick: () => {
      if (rows.children.length < MAX_MATCHERS) rows.append(matcherRow());
    } }, t("silence.add_matcher"))),
  h("div", { class: "row" },
    field(t("silence.starts"), starts),
    field(t("silence.ends"), ends, t("silence.ends.hint")),
    field(t("silence.duration"), duration)),
  field(t("silence.comment"), comment),
  h("button", { type: "submit", class: "primary" }, t("silence.create")),
  said.node);

  root.append(h("div", { class: "page silences" },
    h("h1", {}, t("silence.title")),
    h("p", { class: "muted" }, t("silence.explain")),
    canCreate ? form : h("p", { class: "muted" }, t("silence.read_only")),
    h("h2", {}, t("silence.list")),
    h("label", {}, showAll, " ", t("silence.show_all")),
    listNote, list));

  function row(s, now) {
    const active = s.active ?? (s.starts_ms <= now && now < s.ends_ms);
    const state = s.ends_ms <= now ? "expired" : s.starts_ms > now ? "future" : "active";
    const mayExpire = state !== "expired" && (s.estate ? app.canOperate(s.estate) : app.isAdmin);
    const slot = h("div", {});
    return h("tr", { dataset: { silence: s.id, state }, class: active ? null : "muted" },
      h("td", {}, s.estate ? app.estateName(s.estate) : t("silence.all_estates")),
      h("td", {}, h("ul", { class: "plain" }, s.matchers.filter((m) => m.name !== "estate").map((m) => h("li", { class: "mono" }, matcherText(m),
        m.disabled ? h("span", { class: "bad" }, " ", t("silence.disabled", { why: m.disabled })) : null)))),
      h("td", {}, fmtDateTime(s.starts_ms)),
      h("td", {}, fmtDateTime(s.ends_ms)),
      h("td", {}, s.comment),
      h("td", {}, s.created_by),
      h("td", { class: "state" }, t("silence.state." + state)),
      h("td", { class: "actions" }, mayExpire ? confirmButton(t("silence.expire"), async () => {
        await api(`/api/v1/silences/${encodeURIComponent(s.id)}`, { method: "DELETE" });
        said.ok(t("silence.expired", { id: s.id }));
        load();
      }, { slot, action: "expire" }) : null, slot));
  }

  async function load() {
    try {
      const body = await api("/api/v1/silences" + (showAll.checked ? "" : "?active=true"));
      const now = Date.now();
      const items = body.items.slice().sort((a, b) => b.starts_ms - a.starts_ms);
      fill(listNote);
      fill(list, items.length ? h("table", { class: "silences-table" },
        h("thead", {}, h("tr", {}, ["silence.estate", "silence.matchers", "silence.starts", "silence.ends", "silence.comment", "silence.by", "silence.state", "user.actions"].map((k) => h("th", {}, t(k))))),
        h("tbody", {}, capped(items, (s) => row(s, now), { cap, colspan: 8, onMore: () => { cap += 50; load(); } }))) : h("p", { class: "muted" }, t("silence.none")));
    } catch (exc) {
      fill(list, errorBox(exc, load));
    }
  }
  load();
  const timer = setInterval(load, 30_000); // a silence ends by time alone
  return { destroy() { clearInterval(timer); } };
}
