// Remote power of an e-bike charging socket (断电 / 恢复供电): on the device page of an
// `ebike_charger` and on its over-temperature alarm. A command asks to confirm, needs a
// reason, and then shows its state as the socket answers: sent → acknowledged, or failed
// (with the socket's reason) or timed out. The live feed's "command" events move it on.
//
// POST /api/v1/estates/{estate}/devices/{dev}/commands
//   {action: "socket.power_off" | "socket.power_on", reason, alarm_id?}
// → {id, state: sent|acknowledged|failed|timed_out, error, sent_ms, answered_ms, action, dev, alarm_id}
// GET the same path: the device's recent commands. Live event "command":
//   {estate, type: "command", action: <new state>, command: {…the record…}, entry}

import { api, optional } from "../api.js";
import { errorBox, fill, h } from "../dom.js";
import { fmtTime, t, tOr } from "../i18n.js";
import { confirmButton } from "./forms.js";

export const SOCKET_KIND = "ebike_charger";
const ACTIONS = [["socket.power_off", "command.power_off", "danger"], ["socket.power_on", "command.power_on", null]];
const FINAL = new Set(["acknowledged", "failed", "timed_out"]);
const REASON_MAX = 200; // the API's bound

// The command record of a live "command" event (or a record as it is).
export function commandOf(data) {
  return data && data.command && typeof data.command === "object" ? data.command : data;
}

// The reasons our gateway (gateway/runtime.py, the adapters) and the service (alerts/commands.py,
// alerts/remote.py) give in English, labelled like the dead-letter reasons; any other reason is
// shown as the gateway wrote it. The words as written stay in the title (hover).
const REASONS = [
  [/^no (device|\w+) '[^']*' behind this gateway$/, "no_device"],
  [/^expired at \d+, now \d+ by this gateway's clock/, "expired"],
  [/^unknown action /, "unknown_action"],
  [/^the socket has not started yet/, "not_ready"],
  [/ takes? no commands \(/, "no_commands"],
  [/^adapter error: /, "adapter_error"],
  [/^the gateway refused it without a reason$/, "no_reason"],
  [/^no answer from gateway \S+ within /, "no_answer"],
  [/^not sent: the service's broker connection is down/, "not_sent"],
];

export function reasonText(error) {
  const hit = REASONS.find(([re]) => re.test(error));
  return hit ? t("command.error." + hit[1]) : error;
}

export function reasonNode(error) {
  return h("span", { class: "command-error", title: error, dataset: { reason: error } }, reasonText(error));
}

// "断电：已确认执行（14:02:11）" / "断电：失败 — 插座无响应"
export function commandText(c) {
  const what = tOr("command.action." + c.action, c.action);
  const state = tOr("command.state." + c.state, c.state);
  const when = c.answered_ms || c.sent_ms;
  return [`${what}：${state}${when ? `（${fmtTime(when)}）` : ""}`, c.error ? [" — ", reasonNode(c.error)] : null];
}

export class SocketControl {
  constructor(app, estate, dev, { alarmId = null } = {}) {
    this.app = app;
    this.estate = estate;
    this.dev = dev;
    this.alarmId = alarmId;
    this.commands = new Map(); // id -> the latest record of a command sent from here
    this.reason = h("input", { name: "command_reason", required: true, maxlength: REASON_MAX, placeholder: t("command.reason.placeholder"), "aria-label": t("command.reason") });
    this.said = h("div", { class: "command-said", "aria-live": "polite" });
    this.states = h("ul", { class: "command-states plain", "aria-live": "polite" });
    this.node = h("div", { class: "socket-control", dataset: { dev } },
      h("label", {}, t("command.reason"), " ", this.reason), " ",
      ACTIONS.map(([action, label, cls]) => [this.button(action, t(label), cls), " "]),
      this.said, this.states);
  }

  // The device's recent commands (their states), where the route is there.
  async load() {
    try {
      const body = await optional(`/api/v1/estates/${encodeURIComponent(this.estate)}/devices/${encodeURIComponent(this.dev)}/commands?limit=5`);
      for (const c of body ? body.items : []) this.onCommand(c);
    } catch (exc) {
      fill(this.said, errorBox(exc));
    }
  }

  button(action, label, cls) {
    const ready = () => {
      if (this.reason.value.trim()) return true;
      fill(this.said, errorBox({ message: t("command.reason_required") }));
      this.reason.focus();
      return false;
    };
    return confirmButton(label, async () => {
      fill(this.said);
      const body = { action, reason: this.reason.value.trim() };
      if (this.alarmId) body.alarm_id = this.alarmId;
      const rec = await api(`/api/v1/estates/${encodeURIComponent(this.estate)}/devices/${encodeURIComponent(this.dev)}/commands`, { method: "POST", body });
      this.reason.value = "";
      this.onCommand(rec);
    }, {
      slot: this.said, cls: ["command", cls], dataset: { command: action }, ready,
      confirm: t("command.confirm", { what: label, dev: this.dev }),
    });
  }

  // A command record, from the POST's answer, the list, or the live feed ("command" event).
  onCommand(data) {
    const c = commandOf(data);
    if (!c || !c.id || c.dev !== this.dev || (c.estate && c.estate !== this.estate)) return;
    const before = this.commands.get(c.id);
    // the live feed may overtake the POST's answer: a final state is not undone by "sent"
    if (before && FINAL.has(before.state) && !FINAL.has(c.state)) return;
    this.commands.set(c.id, { ...before, ...c });
    const latest = [...this.commands.values()].sort((a, b) => b.sent_ms - a.sent_ms).slice(0, 5);
    fill(this.states, latest.map((x) => h("li", { class: ["command-state", "cmd-" + x.state], dataset: { id: x.id, state: x.state, action: x.action } }, commandText(x))));
  }
}
