// Every label of the page comes from messages.json (zh-CN first, English second); names of
// device families, kinds, metrics and events come from the device catalog the API serves.
// Times are shown in Asia/Shanghai whatever the browser's own zone is.

export const LANGS = ["zh-CN", "en"];
export const TZ = "Asia/Shanghai";
const TZ_OFFSET_MS = 8 * 3600_000; // Asia/Shanghai has had no daylight saving since 1991

let messages = null;
let current = LANGS.includes(localStorage.getItem("ew.lang")) ? localStorage.getItem("ew.lang") : "zh-CN";

export async function loadMessages() {
  const r = await fetch("/static/messages.json");
  if (!r.ok) throw new Error("messages.json: " + r.status);
  messages = await r.json();
}

export function lang() { return current; }

export function setLang(next) {
  current = next;
  localStorage.setItem("ew.lang", next);
  document.documentElement.lang = next;
}

// t("alarm.ack"), or t("plan.tasks_overdue", {n: 3}) filling its "{n}".
export function t(key, vars) {
  const text = messages[current][key] ?? messages["zh-CN"][key] ?? key;
  if (!vars) return text;
  return text.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
}

// A label that exists, else the fallback (for open-ended codes: roles, actions, reasons).
export function tOr(key, fallback) {
  return messages[current][key] ?? messages["zh-CN"][key] ?? fallback;
}

// {zh, en} objects from the API (plan names, alarm summaries, catalog labels).
export function pick(obj, fallback = "") {
  if (!obj) return fallback;
  return (current === "en" ? obj.en : obj.zh) || obj.zh || obj.en || fallback;
}

// Fills [data-i18n] elements (the static shell).
export function translate(root = document) {
  root.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
}

function parts(ms, opts) {
  return new Intl.DateTimeFormat("zh-CN", { timeZone: TZ, hour12: false, ...opts }).format(new Date(ms));
}

export function fmtDateTime(ms) {
  if (ms == null) return "—";
  return parts(ms, { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function fmtTime(ms) {
  if (ms == null) return "—";
  return parts(ms, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function fmtShort(ms) {
  if (ms == null) return "—";
  return parts(ms, { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });
}

// Shanghai wall-clock fields of an instant, for chart ticks.
export function shanghai(ms) {
  const d = new Date(ms + TZ_OFFSET_MS);
  return { y: d.getUTCFullYear(), mo: d.getUTCMonth() + 1, d: d.getUTCDate(), h: d.getUTCHours(), mi: d.getUTCMinutes() };
}

// Floors an instant to a step (e.g. 3 h) of Shanghai wall-clock time.
export function floorShanghai(ms, stepMs) {
  return Math.floor((ms + TZ_OFFSET_MS) / stepMs) * stepMs - TZ_OFFSET_MS;
}

export function shanghaiYear(ms = Date.now()) { return shanghai(ms).y; }

export function fmtAgo(ms, now = Date.now()) {
  if (ms == null) return "—";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return t("time.seconds_ago", { n: s });
  if (s < 3600) return t("time.minutes_ago", { n: Math.floor(s / 60) });
  if (s < 86400) return t("time.hours_ago", { n: Math.floor(s / 3600) });
  return t("time.days_ago", { n: Math.floor(s / 86400) });
}

// "12 分钟" / "1 h 5 min": how long something took or has left. Never negative: a time
// that seems to run backwards is shown as 0, not turned into a plausible positive one.
export function fmtDuration(ms) {
  const m = Math.round(Math.max(0, Number(ms) || 0) / 60000);
  if (m < 60) return t("time.minutes", { n: m });
  return t("time.hours_minutes", { h: Math.floor(m / 60), m: m % 60 });
}

export function fmtNumber(v, digits = 2) {
  if (typeof v !== "number" || !isFinite(v)) return String(v);
  const abs = Math.abs(v);
  const d = abs >= 1000 ? 0 : abs >= 100 ? 1 : digits;
  return v.toLocaleString(current === "en" ? "en-US" : "zh-CN", { maximumFractionDigits: d, minimumFractionDigits: 0 });
}
