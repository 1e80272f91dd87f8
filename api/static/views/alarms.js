// The alarm feed of one estate: live, unacknowledged first, then by severity, newest first;
// acknowledge, assign, note, resolve; a sound while a critical alarm waits for a person.
// An alarm that cleared before anyone acknowledged it (state "cleared", ISA-18.2 RTN
// unacknowledged) stays, marked, until a person acknowledges it, which closes it.

import { api, optional } from "../api.js";
import { errorBox, h, unavailableBox } from "../dom.js";
import { fmtAgo, fmtDateTime, fmtDuration, fmtTime, pick, t, tOr } from "../i18n.js";
import * as sound from "../sound.js";
import { SOCKET_KIND, SocketControl, commandOf, reasonNode } from "./commands.js";

// Alarms a person may confirm as a fire (alerts/plans/data/fire.yaml, level Ⅳ).
const CONFIRMABLE = new Set(["fire-alarm", "fire-alarm-detector", "fire-manual-call", "fire-water-flow", "fire-pressure-switch"]);

export const SEVERITY_RANK = { critical: 0, major: 1, minor: 2, warning: 3 };
const STATE_RANK = { firing: 0, cleared: 1, acknowledged: 2, pending: 3 };
const OPEN = ["pending", "firing", "acknowledged", "cleared"];
const REPEAT_SOUND_MS = 20_000;

export function alarmOrder(a, b) {
  return (STATE_RANK[a.state] ?? 9) - (STATE_RANK[b.state] ?? 9)
    || (SEVERITY_RANK[a.severity] ?? 9) - (SEVERITY_RANK[b.severity] ?? 9)
    || (b.fired_ms || b.started_ms) - (a.fired_ms || a.started_ms);
}

export function alarmsPath(estate, states = OPEN) {
  const q = new URLSearchParams({ estate, state: states.join(","), limit: "1000" });
  return "/api/v1/alarms?" + q;
}

export function deviceLabel(app, alarm) {
  if (alarm.kind === "gateway") return `${t("gateway.one")} ${alarm.subject}`;
  const kind = app.catalog.kinds[alarm.kind];
  return `${kind ? pick(kind) : alarm.kind} ${alarm.subject}`;
}

function wantsSound(a) {
  return a.severity === "critical" && a.state === "firing" && !a.silenced_by;
}

export class AlarmFeed {
  constructor(app, estate, { device = null, onChange = () => {} } = {}) {
    this.app = app;
    this.estate = estate;
    this.device = device; // only this device's alarms (device page)
    this.onChange = onChange;
    this.alarms = new Map();
    this.available = null;
    this.open = new Set(); // ids whose timeline is shown
    this.forms = new Map(); // id -> "assign" | "note" | "resolve"
    this.drafts = new Map(); // "id:kind" -> text typed so far (kept across live re-renders)
    this.timelines = new Map(); // "id:updated_ms" -> timeline entries
    this.sockets = new Map(); // alarm id -> its power buttons (kept across redraws)
    this.node = h("div", { class: "alarm-feed", "aria-live": "polite" });
    this.timer = setInterval(() => this.remind(), REPEAT_SOUND_MS);
    this.ticker = setInterval(() => this.refreshTimes(), 15_000);
  }

  destroy() {
    clearInterval(this.timer);
    clearInterval(this.ticker);
  }

  async load() {
    try {
      const body = await optional(alarmsPath(this.estate));
      this.available = body !== null;
      this.alarms.clear();
      for (const a of body ? body.items : []) if (this.mine(a)) this.alarms.set(a.id, a);
      this.error = null;
    } catch (exc) {
      this.error = exc;
    }
    this.render();
  }

  mine(a) {
    return a.estate === this.estate && OPEN.includes(a.state) && (!this.device || a.device === this.device);
  }

  // A live "alarm" event: {action, alarm, entry}.
  onAlarm(data) {
    const a = data.alarm || data;
    if (!a || !a.id || a.estate !== this.estate) return;
    const before = this.alarms.get(a.id);
    if (this.mine(a)) this.alarms.set(a.id, a);
    else this.alarms.delete(a.id);
    if (this.available === false) this.available = true;
    if (wantsSound(a) && !(before && wantsSound(before))) sound.beep();
    this.render();
  }

  remind() {
    if ([...this.alarms.values()].some(wantsSound)) sound.beep();
  }

  list() {
    return [...this.alarms.values()].sort(alarmOrder);
  }

  refreshTimes() {
    this.node.querySelectorAll("[data-ago]").forEach((el) => { el.textContent = fmtAgo(Number(el.dataset.ago)); });
  }

  render() {
    const focused = this.node.contains(document.activeElement) ? document.activeElement : null;
    const refocus = focused && focused.name ? [focused.closest("article")?.dataset.id, focused.name] : null;
    const items = this.list();
    const parts = [];
    if (this.error) parts.push(errorBox(this.error, () => this.load()));
    if (this.available === false) parts.push(unavailableBox(t("alarm.feed")));
    else if (this.available && !items.length) parts.push(h("p", { class: "all-clear" }, t("alarm.none")));
    for (const a of items) parts.push(this.item(a));
    this.node.replaceChildren(...parts);
    if (refocus) {
      const again = this.node.querySelector(`article[data-id="${CSS.escape(refocus[0] || "")}"] [name="${refocus[1]}"]`);
      if (again) again.focus();
    }
    this.onChange(items);
  }

  item(a) {
    const canOperate = this.app.canOperate(a.estate);
    const when = a.fired_ms || a.started_ms;
    // A late alarm (history) keeps its deadline in the data's time: no countdown against the
    // wall clock, which would show hours "over" a rescue that happened in a replayed past.
    const overdue = a.deadline_breached || (!a.late && a.deadline_ms < Date.now());
    const deadline = a.deadline_ms ? h("div", { class: ["deadline", overdue ? "breached" : null] },
      a.late
        ? t(overdue ? "alarm.deadline_late_breached" : "alarm.deadline_late", { time: fmtDateTime(a.deadline_ms) })
        : overdue
          ? t("alarm.deadline_breached", { time: fmtTime(a.deadline_ms), late: fmtDuration(Date.now() - a.deadline_ms) })
          : t("alarm.deadline", { time: fmtTime(a.deadline_ms), left: fmtDuration(a.deadline_ms - Date.now()) })) : null;
    const cleared = a.state === "cleared"; // over: only the acknowledgement (and notes) are left
    const actions = canOperate ? h("div", { class: "actions" },
      a.state === "firing" || cleared ? h("button", { type: "button", class: "ack primary", onclick: () => this.act(a, "ack", {}) }, t("alarm.ack")) : null,
      // GB 25201 §5.3: a fire verified on site is confirmed (the fire plan goes to Ⅲ)
      CONFIRMABLE.has(a.rule) && !cleared ? h("button", { type: "button", class: "confirm", onclick: () => this.act(a, "confirm", {}) }, t("alarm.confirm")) : null,
      // TSG T5002-2017: the rescue deadline is the technician's arrival
      a.rule.startsWith("elevator-trapped") && !cleared ? h("button", { type: "button", class: "arrived", onclick: () => this.act(a, "arrived", {}) }, t("alarm.arrived")) : null,
      // a charging socket's alarm (over-temperature, a protection tripped, …): cut its power
      // from here (issue 13; the rules' `action: socket.power_off` does it by itself where on)
      a.kind === SOCKET_KIND && a.device && !cleared ? h("button", { type: "button", class: "power", "aria-expanded": String(this.forms.get(a.id) === "power"), onclick: () => this.toggleForm(a, "power") }, t("command.power")) : null,
      cleared ? null : h("button", { type: "button", class: "assign", onclick: () => this.toggleForm(a, "assign") }, t("alarm.assign")),
      h("button", { type: "button", class: "note", onclick: () => this.toggleForm(a, "note") }, t("alarm.note")),
      cleared ? null : h("button", { type: "button", class: "resolve", onclick: () => this.toggleForm(a, "resolve") }, t("alarm.resolve")),
      h("button", { type: "button", class: "details", onclick: () => this.toggleTimeline(a) }, t("alarm.details")))
      : h("div", { class: "actions" }, h("button", { type: "button", class: "details", onclick: () => this.toggleTimeline(a) }, t("alarm.details")));
    const node = h("article", {
      class: ["alarm", "sev-" + a.severity, "state-" + a.state, a.silenced_by ? "silenced" : null],
      dataset: { id: a.id, severity: a.severity, state: a.state },
    },
    h("div", { class: "sev" }, t("severity." + a.severity)),
    h("div", { class: "body" },
      h("div", { class: "summary" }, pick(a.summary, a.rule)),
      h("div", { class: "meta" },
        h("span", { class: "subject" }, deviceLabel(this.app, a)),
        " · ", h("span", { class: "state" }, t("alarm.state." + a.state)),
        a.count > 1 ? ` · ×${a.count}` : null,
        cleared && a.resolved_ms ? ` · ${t("alarm.cleared_at", { time: fmtTime(a.resolved_ms) })}` : null,
        " · ", fmtTime(when), " (", h("span", { dataset: { ago: when } }, fmtAgo(when)), ")",
        a.acked_by ? ` · ${t("alarm.acked_by", { who: a.acked_by })}` : null,
        a.assignee ? ` · ${t("alarm.assignee", { who: a.assignee })}` : null,
        a.silenced_by ? ` · ${t("alarm.silenced")}` : null,
        a.flapping ? ` · ${t("alarm.flapping")}` : null,
        a.late ? h("span", { class: "late" }, ` · ${t("alarm.late")}`) : null,
        a.rule.startsWith("elevator-trapped") && a.detail && a.detail.data && typeof a.detail.data.door_zone === "boolean"
          ? ` · ${t(a.detail.data.door_zone ? "alarm.trapped.landing" : "alarm.trapped.between")}` : null),
      deadline),
    actions);
    const form = this.forms.get(a.id);
    if (form === "power" && canOperate) node.append(this.socketFor(a).node);
    else if (form && canOperate) node.append(this.form(a, form));
    if (this.open.has(a.id)) {
      const box = h("div", { class: "timeline" }, t("app.loading"));
      node.append(box);
      this.fillTimeline(a, box);
    }
    return node;
  }

  socketFor(a) {
    if (!this.sockets.has(a.id)) {
      const control = new SocketControl(this.app, a.estate, a.device, { alarmId: a.id });
      this.sockets.set(a.id, control);
      control.load();
    }
    return this.sockets.get(a.id);
  }

  // A live "command" event: the socket's answer shows on the alarm's buttons and timeline.
  onCommand(data) {
    const c = commandOf(data);
    if (!c || !c.id) return;
    for (const s of this.sockets.values()) s.onCommand(c);
    if (c.alarm_id && this.alarms.has(c.alarm_id)) {
      for (const key of [...this.timelines.keys()]) if (key.startsWith(c.alarm_id + ":")) this.timelines.delete(key);
      if (this.open.has(c.alarm_id)) this.render();
    }
  }

  toggleForm(a, kind) {
    if (this.forms.get(a.id) === kind) this.forms.delete(a.id);
    else this.forms.set(a.id, kind);
    this.render();
    const input = this.node.querySelector(`article[data-id="${CSS.escape(a.id)}"] .inline-form input`);
    if (input) input.focus();
  }

  form(a, kind) {
    const key = `${a.id}:${kind}`;
    const input = h("input", { name: kind, placeholder: t(`alarm.${kind}.placeholder`), required: kind !== "resolve", maxlength: 500,
      oninput: () => this.drafts.set(key, input.value) });
    input.value = this.drafts.get(key) || "";
    const err = h("div", {});
    const submit = h("button", { type: "submit", class: "primary" }, t(`alarm.${kind}.submit`));
    return h("form", { class: "inline-form", onsubmit: async (ev) => {
      ev.preventDefault();
      const value = input.value.trim();
      const body = kind === "assign" ? { assignee: value } : kind === "note" ? { text: value } : (value ? { note: value } : {});
      submit.disabled = true;
      const ok = await this.act(a, kind === "note" ? "notes" : kind, body, err);
      if (ok) { this.forms.delete(a.id); this.drafts.delete(key); this.render(); } else submit.disabled = false;
    } }, input, submit, h("button", { type: "button", onclick: () => this.toggleForm(a, kind) }, t("action.cancel")), err);
  }

  async act(a, action, body, errSlot) {
    try {
      const updated = await api(`/api/v1/alarms/${encodeURIComponent(a.id)}/${action}`, { method: "POST", body });
      this.onAlarm({ alarm: updated && updated.id ? updated : { ...a } });
      if (this.open.has(a.id)) this.render();
      return true;
    } catch (exc) {
      if (errSlot) errSlot.replaceChildren(errorBox(exc));
      else this.app.notice(`${t("err.title")} ${tOr("err.code." + exc.code, "")} ${exc.message}`);
      if (exc.status === 409) this.load(); // someone else changed it: show where it stands
      return false;
    }
  }

  toggleTimeline(a) {
    if (this.open.has(a.id)) this.open.delete(a.id);
    else this.open.add(a.id);
    this.render();
  }

  async fillTimeline(a, box) {
    const key = `${a.id}:${a.updated_ms}`;
    try {
      if (!this.timelines.has(key)) this.timelines.set(key, (await api(`/api/v1/alarms/${encodeURIComponent(a.id)}`)).timeline || []);
      box.replaceChildren(h("ol", {}, this.timelines.get(key).map((e) => h("li", { dataset: { action: e.action } },
        h("time", {}, fmtDateTime(e.ts)), " ", tOr("alarm.action." + e.action, e.action), " · ", tOr("actor." + e.by, e.by),
        // a socket command's entry (command_sent / _acknowledged / _failed / _timed_out): what
        // was asked, why, and the gateway's reason when it failed
        e.action.startsWith("command_") && e.detail
          ? [` · ${tOr("command.action." + e.detail.command_action, e.detail.command_action || "")}`,
            e.detail.reason ? `（${e.detail.reason}）` : null,
            e.detail.error ? h("span", { class: "bad" }, " — ", reasonNode(e.detail.error)) : null]
          : e.detail && (e.detail.text || e.detail.note || e.detail.assignee) ? ` · ${e.detail.text || e.detail.note || e.detail.assignee}` : null))));
    } catch (exc) {
      box.replaceChildren(errorBox(exc));
    }
  }
}
