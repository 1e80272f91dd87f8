// Log in: the token goes into local storage for API calls (the service also sets its
// HttpOnly cookie).

import { api, setToken } from "../api.js";
import { errorBox, h } from "../dom.js";
import { t } from "../i18n.js";

export function mount(root, _params, app) {
  const err = h("div", { class: "login-error" });
  const user = h("input", { id: "login-user", name: "username", autocomplete: "username", required: true, autofocus: true });
  const pass = h("input", { id: "login-pass", name: "password", type: "password", autocomplete: "current-password", required: true });
  const submit = h("button", { id: "login-submit", type: "submit", class: "primary" }, t("login.submit"));
  const form = h("form", { class: "login", onsubmit: async (ev) => {
    ev.preventDefault();
    err.replaceChildren();
    submit.disabled = true;
    submit.textContent = t("login.busy");
    try {
      const body = await api("/api/v1/login", { method: "POST", body: { username: user.value.trim(), password: pass.value } });
      setToken(body.token);
      app.notice("");
      await app.signedIn(body.user);
      app.go(app.home());
    } catch (exc) {
      err.replaceChildren(errorBox(exc));
      submit.disabled = false;
      submit.textContent = t("login.submit");
      pass.select();
    }
  } },
  h("h1", {}, t("login.title")),
  h("p", { class: "sub" }, t("login.subtitle")),
  h("label", {}, t("login.username"), user),
  h("label", {}, t("login.password"), pass),
  submit,
  err,
  h("p", { class: "hint" }, t("login.hint")));
  root.append(h("div", { class: "login-wrap" }, form));
  user.focus();
  return {};
}
