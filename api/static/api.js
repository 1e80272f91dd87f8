// Talking to the service: REST with the bearer token, and the live stream.
//
// The live stream is read with fetch() rather than EventSource: EventSource cannot send the
// Authorization header, and the bootstrap admin of `make demo`'s "/#token=…" link has no login
// cookie. One reader for both keeps one code path.

import { t } from "./i18n.js";

const TOKEN_KEY = "ew.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  // A route that is not there yet (404 with the framework's own body) or a part of the
  // service that is not running (503): the page shows "not available", not an error.
  get unavailable() {
    return this.status === 503 || (this.status === 404 && this.message === "Not Found");
  }
}

export const session = {
  token: localStorage.getItem(TOKEN_KEY),
  user: null,
  onUnauthorized: () => {},
};

export function setToken(token) {
  session.token = token;
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

function headers(json) {
  const h = {};
  if (session.token) h.Authorization = "Bearer " + session.token;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function errorOf(r) {
  let body = null;
  try { body = await r.json(); } catch { /* not JSON: a proxy's page */ }
  const e = body && body.error;
  return new ApiError(r.status, e ? e.code : "http_" + r.status, e ? e.message : (r.statusText || t("err.http", { status: r.status })));
}

export async function api(path, { method = "GET", body, signal } = {}) {
  let r;
  try {
    r = await fetch(path, { method, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body), signal, credentials: "same-origin" });
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    throw new ApiError(0, "network", t("err.network"));
  }
  if (!r.ok) {
    const err = await errorOf(r);
    if (r.status === 401 && path !== "/api/v1/login") session.onUnauthorized(err);
    throw err;
  }
  if (r.status === 204) return null;
  return r.json();
}

// Every page of a paged list (``items`` + ``next_cursor``), as one ``{ items, total }``.
// Bounded: a list longer than maxPages pages is cut there (the view says how many in all).
export async function apiPages(path, { signal, maxPages = 50 } = {}) {
  const sep = path.includes("?") ? "&" : "?";
  const items = [];
  let cursor = null;
  let total = 0;
  for (let page = 0; page < maxPages; page++) {
    const body = await api(cursor === null ? path : `${path}${sep}cursor=${encodeURIComponent(cursor)}`, { signal });
    items.push(...body.items);
    total = body.total;
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  return { items, total };
}

// Same as api() but null when the route is not available (alerts engine not wired yet).
export async function optional(path, opts) {
  try { return await api(path, opts); } catch (exc) {
    if (exc instanceof ApiError && exc.unavailable) return null;
    throw exc;
  }
}

// A download with progress: onProgress(receivedBytes, totalBytes | null). Returns a Blob.
export async function download(path, onProgress, signal) {
  let r;
  try { r = await fetch(path, { headers: headers(false), signal, credentials: "same-origin" }); } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    throw new ApiError(0, "network", t("err.network"));
  }
  if (!r.ok) throw await errorOf(r);
  const total = Number(r.headers.get("content-length")) || null;
  const reader = r.body.getReader();
  const chunks = [];
  let got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    got += value.length;
    onProgress(got, total);
  }
  const name = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(r.headers.get("content-disposition") || "");
  const blob = new Blob(chunks, { type: r.headers.get("content-type") || "application/octet-stream" });
  return { blob, filename: name ? decodeURIComponent(name[1]) : null };
}

export function saveBlob(blob, filename) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
}

// Server-Sent Events over fetch. onEvent(name, data); onState("live" | "connecting" | "down",
// detail). After a reconnect the caller gets a synthetic "resync": events may have been missed.
export class LiveStream {
  constructor(path, onEvent, onState) {
    this.path = path;
    this.onEvent = onEvent;
    this.stateName = "connecting";
    this.onState = (state, detail) => { this.stateName = state; onState(state, detail); };
    this.ctrl = null;
    this.stopped = false;
    this.connectedOnce = false;
    this.retryMs = 1000;
  }

  start() {
    this.run();
    return this;
  }

  stop() {
    this.stopped = true;
    if (this.ctrl) this.ctrl.abort();
  }

  async run() {
    while (!this.stopped) {
      this.ctrl = new AbortController();
      this.onState("connecting");
      try {
        const r = await fetch(this.path, { headers: { ...headers(false), Accept: "text/event-stream" }, signal: this.ctrl.signal, credentials: "same-origin" });
        if (!r.ok) {
          const err = await errorOf(r);
          if (r.status === 401) { session.onUnauthorized(err); return; }
          if (r.status === 404 || r.status === 403) { this.onState("down", err.message); return; }
          throw err;
        }
        await this.read(r.body.getReader());
      } catch (exc) {
        if (this.stopped) return;
        this.onState("down", exc.message);
      }
      if (this.stopped) return;
      await new Promise((res) => setTimeout(res, this.retryMs));
      this.retryMs = Math.min(this.retryMs * 2, 15_000);
    }
  }

  async read(reader) {
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        this.frame(frame);
      }
    }
  }

  frame(text) {
    let name = "message";
    const data = [];
    for (const line of text.split("\n")) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (!data.length) return; // a keepalive comment
    let body;
    try { body = JSON.parse(data.join("\n")); } catch { return; }
    if (name === "hello") {
      this.retryMs = 1000;
      this.onState("live");
      if (this.connectedOnce) this.onEvent("resync", {});
      this.connectedOnce = true;
      return;
    }
    this.onEvent(name, body);
  }
}
