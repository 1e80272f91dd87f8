// Drills (应急演练): plan one for a date, record it once held (participants, findings,
// outcome) or missed, and see an estate's drills of a year against the number each plan
// requires. Operators of the estate and admins plan and record; everyone else reads.

import { api } from "../api.js";
import { errorBox, fill, h } from "../dom.js";
import { fmtDateTime, pick, shanghaiYear, t } from "../i18n.js";
import { capped, dateTimeInput, field, fromLocalValue, outcome } from "./forms.js";

const MAX_PARTICIPANTS = 500;

export function mount(root, params, app) {
  const visible = app.estates;
  const estate = h("select", { name: "estate", "aria-label": t("drill.estate") }, visible.map((e) => h("option", { value: e.id }, e.name)));
  if (params.estate && visible.some((e) => e.id === params.estate)) estate.value = params.estate;
  const year = h("input", { type: "number", name: "year", min: 2000, max: 2999, value: String(shanghaiYear()), size: 5, "aria-label": t("drill.year") });
  const yearly = h("div", { class: "drill-yearly" });
  const list = h("div", { class: "drill-list" });
  let plans = [];
  let cap = 50;

  // plan a drill
  const planSaid = outcome();
  const planPick = h("select", { name: "plan", required: true });
  const when = dateTimeInput("scheduled", Date.now() + 7 * 86_400_000, { required: true });
  const planForm = h("form", { class: "drill-plan-form card", onsubmit: async (ev) => {
    ev.preventDefault();
    planSaid.clear();
    const at = fromLocalValue(when.value);
    if (at === null) { planSaid.error({ message: t("drill.bad_time") }); return; }
    try {
      const d = await api("/api/v1/drills/planned", { method: "POST", body: { estate: estate.value, plan: planPick.value, scheduled_ms: at } });
      planSaid.ok(t("drill.planned", { plan: planName(d.plan), time: fmtDateTime(d.scheduled_ms) }));
      load();
    } catch (exc) {
      planSaid.error(exc);
    }
  } },
  h("h2", {}, t("drill.plan_new")),
  h("div", { class: "row" }, field(t("drill.plan"), planPick), field(t("drill.scheduled"), when)),
  h("button", { type: "submit", class: "primary" }, t("drill.plan_submit")),
  planSaid.node);

  // record a drill (held or missed), a planned one when picked from the list
  const recSaid = outcome();
  const recPlan = h("select", { name: "plan", required: true });
  const drillId = h("input", { type: "hidden", name: "drill_id" });
  const recFor = h("p", { class: "muted recording-for" });
  const held = dateTimeInput("held", Date.now(), { required: true });
  const status = h("select", { name: "status" }, h("option", { value: "held" }, t("drill.status.held")), h("option", { value: "missed" }, t("drill.status.missed")));
  const participants = h("textarea", { name: "participants", rows: 2, cols: 40, placeholder: t("drill.participants.placeholder") });
  const findings = h("textarea", { name: "findings", rows: 3, cols: 40, maxlength: 5000 });
  const result = h("textarea", { name: "outcome", rows: 2, cols: 40, maxlength: 2000 });
  const recForm = h("form", { class: "drill-record-form card", onsubmit: async (ev) => {
    ev.preventDefault();
    recSaid.clear();
    const at = fromLocalValue(held.value);
    if (at === null) { recSaid.error({ message: t("drill.bad_time") }); return; }
    const people = participants.value.split(/[\n,，、;；]+/).map((x) => x.trim()).filter(Boolean);
    if (people.length > MAX_PARTICIPANTS) { recSaid.error({ message: t("drill.too_many", { n: MAX_PARTICIPANTS }) }); return; }
    if (status.value === "held" && !people.length) { recSaid.error({ message: t("drill.needs_participants") }); return; }
    const body = { estate: estate.value, plan: recPlan.value, held_ms: at, status: status.value, participants: people, findings: findings.value.trim(), outcome: result.value.trim() };
    if (drillId.value) body.drill_id = drillId.value;
    try {
      const d = await api("/api/v1/drills", { method: "POST", body });
      recSaid.ok(t("drill.recorded", { plan: planName(d.plan), time: fmtDateTime(d.held_ms) }));
      drillId.value = "";
      fill(recFor);
      participants.value = findings.value = result.value = "";
      load();
    } catch (exc) {
      recSaid.error(exc);
    }
  } },
  h("h2", {}, t("drill.record_new")), recFor, drillId,
  h("div", { class: "row" }, field(t("drill.plan"), recPlan), field(t("drill.held"), held), field(t("drill.status"), status)),
  field(t("drill.participants"), participants, t("drill.participants.hint")),
  field(t("drill.findings"), findings),
  field(t("drill.outcome"), result),
  h("button", { type: "submit", class: "primary" }, t("drill.record_submit")),
  recSaid.node);

  const forms = h("div", { class: "drill-forms" });
  root.append(h("div", { class: "page drills" },
    h("h1", {}, t("drill.title")),
    h("p", { class: "muted" }, t("drill.explain")),
    h("div", { class: "filters" }, field(t("drill.estate"), estate), field(t("drill.year"), year)),
    forms,
    h("h2", {}, t("drill.yearly")), yearly,
    h("h2", {}, t("drill.list")), list));

  function planName(id) {
    const p = plans.find((x) => x.id === id);
    return p ? pick(p.name, id) : id;
  }

  function showForms() {
    const may = app.canOperate(estate.value);
    fill(forms, may ? [planForm, recForm] : h("p", { class: "muted" }, t("drill.read_only")));
  }

  function record(d) {
    drillId.value = d.id;
    recPlan.value = d.plan;
    fill(recFor, t("drill.recording_for", { plan: planName(d.plan), time: fmtDateTime(d.scheduled_ms || d.created_ms) }), " ",
      h("button", { type: "button", onclick: () => { drillId.value = ""; fill(recFor); } }, t("action.cancel")));
    recForm.scrollIntoView({ block: "nearest" });
    participants.focus();
  }

  function row(d) {
    const mayRecord = d.status === "scheduled" && app.canOperate(d.estate);
    return h("tr", { dataset: { drill: d.id, status: d.status } },
      h("td", {}, planName(d.plan)),
      h("td", { class: "state" }, t("drill.status." + d.status)),
      h("td", {}, fmtDateTime(d.scheduled_ms)),
      h("td", {}, fmtDateTime(d.held_ms)),
      h("td", {}, d.participants.length ? d.participants.join("、") : "—"),
      h("td", {}, d.findings || "—", d.outcome ? h("div", { class: "muted" }, d.outcome) : null),
      h("td", {}, d.recorded_by || "—"),
      h("td", { class: "actions" }, mayRecord ? h("button", { type: "button", class: "record", onclick: () => record(d) }, t("drill.record")) : null));
  }

  async function load() {
    showForms();
    try {
      if (!plans.length) {
        plans = (await api("/api/v1/plans")).items;
        const opts = () => plans.map((p) => h("option", { value: p.id }, pick(p.name, p.id)));
        fill(planPick, opts());
        fill(recPlan, opts());
      }
      if (!estate.value) { fill(list, h("p", { class: "muted" }, t("drill.no_estate"))); return; }
      const q = new URLSearchParams({ estate: estate.value, year: year.value || String(shanghaiYear()) });
      const body = await api("/api/v1/drills?" + q);
      fill(yearly, body.yearly ? h("div", { class: "chips" }, body.yearly.map((c) =>
        h("span", { class: ["chip", c.short ? "warn" : "on"], dataset: { plan: c.plan } }, planName(c.plan), " ", h("b", {}, `${c.held}/${c.required}`)))) : null);
      fill(list, body.items.length ? h("table", { class: "drills-table" },
        h("thead", {}, h("tr", {}, ["drill.plan", "drill.status", "drill.scheduled", "drill.held", "drill.participants", "drill.findings", "drill.recorded_by", "user.actions"].map((k) => h("th", {}, t(k))))),
        h("tbody", {}, capped(body.items, row, { cap, colspan: 8, onMore: () => { cap += 50; load(); } }))) : h("p", { class: "muted" }, t("drill.none")));
    } catch (exc) {
      fill(list, errorBox(exc, load));
    }
  }
  estate.addEventListener("change", () => { cap = 50; load(); });
  year.addEventListener("change", () => { cap = 50; load(); });
  load();
  return {};
}
