// The active emergency plans of one estate: response level, sources, checklist to tick
// (overdue tasks in red), and the activation's timeline. An operator of the estate raises a
// plan by hand (at a level a person may activate), moves an activation's level up or down,
// and stands it down with a reason.

import { api, optional } from "../api.js";
import { errorBox, h, unavailableBox } from "../dom.js";
import { fmtDateTime, fmtDuration, fmtTime, lang, pick, t, tOr } from "../i18n.js";

const LEVEL_CLASS = { "Ⅳ": "lvl-4", "Ⅲ": "lvl-3", "Ⅱ": "lvl-2", "Ⅰ": "lvl-1" };
const LEVEL_ORDER = ["Ⅳ", "Ⅲ", "Ⅱ", "Ⅰ"];

// GET /api/v1/plans once per page load: the plans and the levels a person may activate.
let plansOnce = null;
function plansCatalog() {
  if (!plansOnce) plansOnce = api("/api/v1/plans").then((b) => b.items, (exc) => { plansOnce = null; throw exc; });
  return plansOnce;
}

export function personLevels(plan) {
  return LEVEL_ORDER.filter((l) => plan && plan.levels[l] && plan.levels[l].person);
}

export function levelBadge(level) {
  return h("span", { class: ["level", LEVEL_CLASS[level] || "lvl-none"] }, t("plan.level", { level }));
}

// What put the plan at its level, as a person says it: "暴雪 黄色（站点观测 ws-1）".
export function sourceLabel(src) {
  const [kind, rest] = src.key.split(":");
  const d = src.detail || {};
  const colour = d.weather_level ? t("weather.level." + d.weather_level) : "";
  if (kind === "observed") return t("plan.source.observed", { hazard: tOr("hazard." + rest, rest), level: colour, station: d.station || "" });
  if (kind === "warning") return t("plan.source.warning", { hazard: tOr("hazard." + (d.hazard || ""), d.hazard || ""), level: colour, source: (d.warning && d.warning.source) || rest });
  if (kind === "alarm") return t("plan.source.alarm", { summary: d.summary || d.rule || rest, subject: d.subject || "" });
  if (kind === "manual") return t("plan.source.manual", { who: d.by || "", reason: d.reason || "" });
  if (kind === "confirmed") return t("plan.source.confirmed", { who: d.by || "" });
  if (kind === "together") return t("plan.source.together", { rules: (d.rules || []).join("、") });
  return src.key;
}

export class PlanPanel {
  constructor(app, estate) {
    this.app = app;
    this.estate = estate;
    this.activations = new Map();
    this.timelines = new Map();
    this.folded = new Set(); // activations whose timeline the person folded away
    this.reasons = new Map(); // activation id -> reason typed so far (kept across redraws)
    this.plans = null;
    this.available = null;
    this.node = h("div", { class: "plans" });
    this.ticker = setInterval(() => this.render(), 30_000); // tasks become overdue as time passes
  }

  destroy() { clearInterval(this.ticker); }

  async load() {
    try {
      const q = new URLSearchParams({ estate: this.estate, active: "true" });
      const body = await optional("/api/v1/plans/activations?" + q);
      this.available = body !== null;
      if (this.available && this.app.canOperate(this.estate)) {
        try { this.plans = await plansCatalog(); } catch (exc) { this.plansError = exc; }
      }
      this.activations.clear();
      for (const a of body ? body.items : []) if (a.active && a.estate === this.estate) this.activations.set(a.id, a);
      this.error = null;
    } catch (exc) {
      this.error = exc;
    }
    this.render();
  }

  // A live "plan" event: {action, activation, entry}.
  onPlan(data) {
    const a = data.activation || data;
    if (!a || !a.id || a.estate !== this.estate) return;
    if (a.active) this.activations.set(a.id, a);
    else this.activations.delete(a.id);
    this.available = true;
    this.timelines.delete(a.id);
    this.render();
  }

  render() {
    const parts = [];
    if (this.error) parts.push(errorBox(this.error, () => this.load()));
    if (this.available === false) parts.push(unavailableBox(t("plan.title")));
    else if (this.available && !this.activations.size) parts.push(h("p", { class: "all-clear" }, t("plan.none")));
    const acts = [...this.activations.values()].sort((a, b) => LEVEL_ORDER.indexOf(b.level) - LEVEL_ORDER.indexOf(a.level));
    for (const a of acts) parts.push(this.activation(a));
    if (this.available && this.app.canOperate(this.estate)) parts.push(this.raiseForm());
    this.node.replaceChildren(...parts);
  }

  // 人工启动预案: a plan, one of its levels a person may activate, and why. What is typed
  // survives the panel's redraws (live events, the 30 s ticker).
  raiseForm() {
    if (this.plansError) return errorBox(this.plansError, () => { this.plansError = null; this.load(); });
    const plans = (this.plans || []).filter((p) => personLevels(p).length);
    const draft = this.raiseDraft || (this.raiseDraft = { plan: plans[0] ? plans[0].id : "", level: "", reason: "", open: false });
    const said = h("div", { "aria-live": "polite" });
    const plan = h("select", { name: "plan", required: true }, plans.map((p) => h("option", { value: p.id }, pick(p.name, p.id))));
    plan.value = draft.plan;
    const level = h("select", { name: "level", required: true });
    const fillLevels = () => {
      const p = plans.find((x) => x.id === plan.value);
      level.replaceChildren(...personLevels(p).map((l) => h("option", { value: l }, t("plan.level", { level: l }))));
      if (personLevels(p).includes(draft.level)) level.value = draft.level;
    };
    plan.addEventListener("change", () => { draft.plan = plan.value; fillLevels(); draft.level = level.value; });
    level.addEventListener("change", () => { draft.level = level.value; });
    fillLevels();
    const reason = h("input", { name: "reason", required: true, maxlength: 500, placeholder: t("plan.raise.reason.placeholder"), oninput: () => { draft.reason = reason.value; } });
    reason.value = draft.reason;
    const submit = h("button", { type: "submit", class: "primary" }, t("plan.raise.submit"));
    return h("details", { class: "plan-raise", open: draft.open || null, ontoggle: (ev) => { draft.open = ev.target.open; } },
      h("summary", {}, t("plan.raise")),
      h("form", { class: "inline-form raise-form", onsubmit: async (ev) => {
        ev.preventDefault();
        submit.disabled = true;
        try {
          const act = await api(`/api/v1/estates/${encodeURIComponent(this.estate)}/plans/activations`, { method: "POST", body: { plan: plan.value, level: level.value, reason: reason.value.trim() } });
          this.raiseDraft = null;
          if (act && act.id) this.onPlan({ activation: act });
        } catch (exc) {
          said.replaceChildren(errorBox(exc));
          submit.disabled = false;
        }
      } },
      h("label", {}, t("plan.raise.plan"), " ", plan), " ",
      h("label", {}, t("plan.raise.level"), " ", level), " ",
      h("label", {}, t("plan.raise.reason"), " ", reason), " ", submit, said));
  }

  // Up or down to another level a person may set, or stand down: each with the reason typed
  // once (required by the API); standing down asks to confirm.
  controls(a) {
    const plan = (this.plans || []).find((p) => p.id === a.plan);
    const here = LEVEL_ORDER.indexOf(a.level);
    const said = h("div", { class: "plan-said", "aria-live": "polite" });
    const reason = h("input", { name: "plan_reason", required: true, maxlength: 500, placeholder: t("plan.reason.placeholder"),
      oninput: () => this.reasons.set(a.id, reason.value) });
    reason.value = this.reasons.get(a.id) || "";
    const why = () => {
      const text = reason.value.trim();
      if (!text) { said.replaceChildren(errorBox({ message: t("plan.reason_required") })); reason.focus(); }
      return text;
    };
    const done = (act) => { this.reasons.delete(a.id); if (act && act.id) this.onPlan({ activation: act }); };
    const relevel = (l) => {
      const up = LEVEL_ORDER.indexOf(l) > here;
      return h("button", { type: "button", class: up ? "raise" : "lower", dataset: { level: l }, onclick: async (ev) => {
        const text = why();
        if (!text) return;
        ev.target.disabled = true;
        try {
          done(await api(`/api/v1/estates/${encodeURIComponent(a.estate)}/plans/activations`, { method: "POST", body: { plan: a.plan, level: l, reason: text } }));
        } catch (exc) {
          said.replaceChildren(errorBox(exc));
          ev.target.disabled = false;
        }
      } }, t(up ? "plan.raise_to" : "plan.lower_to", { level: l }));
    };
    const levels = personLevels(plan).filter((l) => l !== a.level);
    const standDown = h("button", { type: "button", class: "stand-down", dataset: { action: "stand-down" } }, t("plan.stand_down"));
    let armed = false;
    standDown.addEventListener("click", async () => {
      const text = why();
      if (!text) return;
      if (!armed) { armed = true; standDown.textContent = t("action.confirm", { what: t("plan.stand_down") }); standDown.classList.add("armed"); return; }
      standDown.disabled = true;
      try {
        const act = await api(`/api/v1/plans/activations/${encodeURIComponent(a.id)}/stand-down`, { method: "POST", body: { reason: text } });
        done(act && act.id ? act : { ...a, active: false });
      } catch (exc) {
        said.replaceChildren(errorBox(exc));
        standDown.disabled = false;
        if (exc.status === 409) this.load();
      }
    });
    return h("div", { class: "plan-controls" },
      h("label", {}, t("plan.reason"), " ", reason), " ",
      levels.map((l) => [relevel(l), " "]), standDown, said);
  }

  activation(a) {
    const now = Date.now();
    const canOperate = this.app.canOperate(a.estate);
    const tasks = a.tasks.slice().sort((x, y) => LEVEL_ORDER.indexOf(x.level) - LEVEL_ORDER.indexOf(y.level) || x.due_ms - y.due_ms);
    const open = tasks.filter((x) => x.done_ms == null);
    const overdue = open.filter((x) => x.due_ms < now);
    const timeline = h("ol", { class: "plan-timeline" });
    this.fillTimeline(a, timeline);
    return h("section", { class: "activation", dataset: { id: a.id, level: a.level } },
      h("div", { class: "plan-head" },
        levelBadge(a.level),
        h("h3", {}, pick(a.plan_name, a.plan)),
        h("span", { class: "since" }, t("plan.since", { time: fmtDateTime(a.started_ms), took: fmtDuration(now - a.started_ms) }))),
      h("div", { class: "sources" }, t("plan.sources"), " ", a.sources.length
        ? a.sources.map((s) => h("span", { class: "chip" }, sourceLabel(s), " → ", s.level))
        : t("plan.no_sources", { since: a.below_since_ms ? fmtTime(a.below_since_ms) : "—" })),
      h("div", { class: "task-count" }, t("plan.tasks_left", { open: open.length, total: tasks.length }),
        overdue.length ? h("span", { class: "overdue-count" }, " · ", t("plan.tasks_overdue", { n: overdue.length })) : null),
      h("ul", { class: "checklist" }, tasks.map((task) => this.task(a, task, now, canOperate))),
      canOperate ? this.controls(a) : null,
      h("details", {
        class: "timeline-box", open: !this.folded.has(a.id),
        ontoggle: (ev) => { if (ev.target.open) this.folded.delete(a.id); else this.folded.add(a.id); },
      }, h("summary", {}, t("plan.timeline")), timeline));
  }

  task(a, task, now, canOperate) {
    const done = task.done_ms != null;
    const overdue = !done && task.due_ms < now;
    const text = lang() === "en" ? task.text_en || task.text : task.text;
    let status;
    if (done) status = t(task.late ? "plan.done_late" : "plan.done", { time: fmtTime(task.done_ms), who: task.done_by || "" });
    else if (overdue) status = t("plan.overdue", { late: fmtDuration(now - task.due_ms) });
    else status = t("plan.due", { time: fmtTime(task.due_ms), left: fmtDuration(task.due_ms - now) });
    const err = h("span", { class: "task-error" });
    const box = h("input", {
      type: "checkbox", checked: done, disabled: done || !canOperate, "aria-label": text,
      onchange: async () => {
        box.disabled = true;
        try {
          const updated = await api(`/api/v1/plans/activations/${encodeURIComponent(a.id)}/tasks/${encodeURIComponent(task.id)}/done`, { method: "POST", body: {} });
          if (updated && updated.id) this.onPlan({ activation: updated });
        } catch (exc) {
          box.checked = false;
          box.disabled = false;
          err.replaceChildren(errorBox(exc));
          if (exc.status === 409) setTimeout(() => this.load(), 3000); // done by someone else
        }
      },
    });
    return h("li", { class: ["task", done ? "done" : null, overdue ? "overdue" : null, task.late ? "late" : null], dataset: { task: task.id } },
      h("label", {}, box, h("span", { class: "text" }, text)),
      h("span", { class: "status" }, status, h("span", { class: "role" }, tOr("role." + task.role, task.role), " · ", t("plan.level_short", { level: task.level }))),
      err);
  }

  async fillTimeline(a, list) {
    try {
      if (!this.timelines.has(a.id)) {
        const full = await optional(`/api/v1/plans/activations/${encodeURIComponent(a.id)}`);
        this.timelines.set(a.id, full ? full.timeline || [] : []);
      }
      list.replaceChildren(...this.timelines.get(a.id).map((e) => h("li", {},
        h("time", {}, fmtDateTime(e.ts)), " ", tOr("plan.action." + e.action, e.action),
        e.level ? [" ", e.level] : null, " · ", tOr("actor." + e.by, e.by),
        e.detail && (e.detail.task || e.detail.reason)
          ? ` · ${e.detail.task || (e.detail.reason_code ? tOr("plan.reason." + e.detail.reason_code, e.detail.reason) : e.detail.reason)}`
          : null)));
    } catch (exc) {
      list.replaceChildren(errorBox(exc));
    }
  }
}
