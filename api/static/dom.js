// Building the page from data without innerHTML: text is always text, never markup.

import { t, tOr } from "./i18n.js";

// h("button", {class: "ack", onclick: fn, dataset: {id}}, "确认", childNode, [more, children])
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "class") node.className = Array.isArray(v) ? v.filter(Boolean).join(" ") : v;
    else if (k === "style" && typeof v === "object") Object.assign(node.style, v);
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, v);
  }
  append(node, children);
  return node;
}

// Replaces a node's children; null, false and nested arrays are fine, as in h().
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else node.append(c instanceof Node ? c : String(c));
  }
}

// What the person should do about an error, after the service's own message.
export function hintFor(err) {
  const status = err && err.status;
  if (status === 0) return t("err.hint.network");
  if (status === 401) return t("err.hint.login");
  if (status === 403) return t("err.hint.forbidden");
  if (status === 404) return t("err.hint.not_found");
  if (status === 409) return t("err.hint.conflict");
  if (status === 422) return t("err.hint.invalid");
  if (status >= 500) return t("err.hint.server");
  return "";
}

// The service's own message always shows (it names the specifics); a known error code adds
// what it means and what to do in the page's language.
export function errorBox(err, retry) {
  const local = err.code ? tOr("err.code." + err.code, "") : "";
  const hint = local ? "" : hintFor(err);
  return h("div", { class: "error-box", role: "alert", dataset: { code: err.code || "" } },
    h("strong", {}, t("err.title")), " ", local || err.message || String(err),
    local && err.message ? h("div", { class: "detail" }, err.message) : null,
    hint ? h("div", { class: "hint" }, hint) : null,
    retry ? h("button", { type: "button", onclick: retry }, t("action.retry")) : null);
}

// A part of the service that is not running here (e.g. the alerts engine): say so plainly.
export function unavailableBox(what) {
  return h("div", { class: "unavailable" }, h("strong", {}, t("unavailable.title", { what })), h("div", { class: "hint" }, t("unavailable.hint")));
}

// A progress line for long tasks: "生成报表… 12 s" with a bar when the size is known.
export function progress(label) {
  const bar = h("progress", { max: 1 });
  const text = h("span", {}, label);
  const node = h("div", { class: "progress", role: "status" }, text, " ", bar);
  const started = Date.now();
  const timer = setInterval(() => { text.textContent = `${label} ${Math.round((Date.now() - started) / 1000)} s`; }, 1000);
  return {
    node,
    set(done, total) {
      if (total) { bar.max = total; bar.value = done; } else bar.removeAttribute("value");
      text.textContent = `${label} ${Math.round(done / 1024)} KiB`;
    },
    finish() { clearInterval(timer); node.remove(); },
  };
}

export function debounce(fn, ms) {
  let timer = null;
  let last = 0;
  return (...args) => {
    if (timer) return;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(() => { timer = null; last = Date.now(); fn(...args); }, wait);
  };
}
