// Pieces the action views share: labelled fields, a Shanghai date-time input, a button that
// asks before it acts, a capped list with "more", and the outcome line under a form.

import { errorBox, fill, h } from "../dom.js";
import { shanghai, t } from "../i18n.js";

const TZ_OFFSET_MS = 8 * 3600_000; // the page's times are Asia/Shanghai (see i18n.js)

// <label>text <control></label>, so every control has an accessible name.
export function field(label, control, hint) {
  return h("label", { class: "field" }, h("span", { class: "label" }, label), control,
    hint ? h("small", { class: "muted" }, hint) : null);
}

const pad = (n) => String(n).padStart(2, "0");

// "2026-12-05T14:30" of an instant, in Shanghai wall time, for <input type=datetime-local>.
export function localValue(ms) {
  const s = shanghai(ms);
  return `${s.y}-${pad(s.mo)}-${pad(s.d)}T${pad(s.h)}:${pad(s.mi)}`;
}

// The instant of a datetime-local value read as Shanghai wall time; null when empty or bad.
export function fromLocalValue(value) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(value || "");
  if (!m) return null;
  return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5]) - TZ_OFFSET_MS;
}

export function dateTimeInput(name, ms, { required = false } = {}) {
  const input = h("input", { type: "datetime-local", name, required });
  if (ms != null) input.value = localValue(ms);
  return input;
}

// A button that asks "确认…？" (or `confirm`) on the first click and acts on the second (or
// goes back after a few seconds); run() may throw an ApiError, shown in `slot` with the API's
// own message. `ready()`, when given, is asked before each click counts (a required reason).
export function confirmButton(label, run, { slot, action, cls, dataset, confirm, ready } = {}) {
  const b = h("button", { type: "button", class: cls || null, dataset: dataset || { action: action || "" } }, label);
  let armed = false;
  let timer = null;
  const disarm = () => { armed = false; b.textContent = label; b.classList.remove("armed"); };
  b.addEventListener("click", async () => {
    if (ready && !ready()) return;
    if (!armed) {
      armed = true;
      b.textContent = confirm || t("action.confirm", { what: label });
      b.classList.add("armed");
      timer = setTimeout(disarm, 8000);
      return;
    }
    clearTimeout(timer);
    disarm();
    b.disabled = true;
    try {
      await run();
    } catch (exc) {
      if (slot) fill(slot, errorBox(exc));
      else throw exc;
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

// A form's outcome line: ok text or the API's error (with what to do).
export function outcome() {
  const node = h("div", { class: "form-outcome", "aria-live": "polite" });
  return {
    node,
    ok(text) { fill(node, h("p", { class: "ok" }, text)); },
    error(exc) { fill(node, errorBox(exc)); },
    clear() { fill(node); },
  };
}

// The first `cap` rows of a long list, with "显示 {shown}/{total}" and a button for more.
// colspan: the rows are table rows (the note becomes one too).
export function capped(items, row, { cap = 50, onMore, colspan = 0 } = {}) {
  const out = items.slice(0, cap).map(row);
  if (items.length > cap) {
    const note = [t("list.capped", { shown: cap, total: items.length }), " ",
      onMore ? h("button", { type: "button", class: "more", onclick: onMore }, t("list.more")) : null];
    out.push(colspan ? h("tr", { class: "list-cap" }, h("td", { colspan, class: "muted" }, note)) : h("p", { class: "muted list-cap" }, note));
  }
  return out;
}

// Estates the user may act on, as <option>s (admins: every one).
export function estateOptions(app, { only = "operate" } = {}) {
  const list = only === "operate" ? app.estates.filter((e) => app.canOperate(e.id)) : app.estates;
  return list.map((e) => h("option", { value: e.id }, e.name));
}
