// Random inspection draws ("double random"): draw a share of the estates by a recorded seed,
// leaving out those drawn in the last months; every draw is kept with who made it.

import { api } from "../api.js";
import { errorBox, h, progress } from "../dom.js";
import { fmtDateTime, t } from "../i18n.js";

export function mount(root, _params, app) {
  const list = h("div", {});
  const result = h("div", { class: "draw-result" });
  const share = h("input", { name: "share", type: "number", min: 1, max: 100, step: 1, value: 10, required: true });
  const months = h("input", { name: "exclude_months", type: "number", min: 0, max: 120, step: 1, value: 12, required: true });
  const regions = [...new Set(app.estates.map((e) => e.region).filter(Boolean))].sort();
  const region = h("select", { name: "region" }, h("option", { value: "" }, t("inspection.all_regions")), regions.map((r) => h("option", { value: r }, r)));
  const seed = h("input", { name: "seed", type: "number", min: 0, step: 1, placeholder: t("inspection.seed_placeholder") });
  const note = h("input", { name: "note", maxlength: 500 });
  const submit = h("button", { type: "submit", class: "primary" }, t("inspection.draw"));

  const form = h("form", { class: "draw-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { share: Number(share.value) / 100, exclude_months: Number(months.value), region: region.value, note: note.value.trim() };
    if (seed.value !== "") body.seed = Number(seed.value);
    submit.disabled = true;
    const busy = progress(t("inspection.drawing"));
    result.replaceChildren(busy.node);
    try {
      const draw = await api("/api/v1/inspections/draws", { method: "POST", body });
      busy.finish();
      result.replaceChildren(drawCard(draw, true));
      load();
    } catch (exc) {
      busy.finish();
      result.replaceChildren(errorBox(exc));
    } finally {
      submit.disabled = false;
    }
  } },
  h("label", {}, t("inspection.share"), h("span", { class: "unit-input" }, share, "%")),
  h("label", {}, t("inspection.exclude_months"), months),
  h("label", {}, t("inspection.region"), region),
  h("label", {}, t("inspection.seed"), seed),
  h("label", { class: "wide" }, t("inspection.note"), note),
  submit);

  function drawCard(d, fresh) {
    return h("article", { class: ["draw", fresh ? "fresh" : null], dataset: { draw: d.id } },
      h("h3", {}, t("inspection.draw_no", { id: d.id }), " · ", fmtDateTime(d.drawn_ms), " · ", d.drawn_by),
      h("div", { class: "muted" }, t("inspection.params", { share: Math.round(d.share * 100), months: d.exclude_months, region: d.region || t("inspection.all_regions"), seed: d.seed }),
        " · ", d.verified ? h("span", { class: "on" }, t("inspection.verified")) : h("span", { class: "bad" }, t("inspection.not_verified"))),
      h("div", { class: "chosen" }, t("inspection.chosen", { n: d.chosen.length, of: d.candidates.length }), " ",
        d.chosen.map((e) => h("span", { class: "chip" }, app.estateName(e)))),
      d.note ? h("div", { class: "note" }, d.note) : null);
  }

  async function load() {
    try {
      const body = await api("/api/v1/inspections/draws");
      list.replaceChildren(...(body.items.length ? body.items.map((d) => drawCard(d, false)) : [h("p", { class: "muted" }, t("inspection.none"))]));
    } catch (exc) {
      list.replaceChildren(errorBox(exc, load));
    }
  }
  root.append(h("div", { class: "page" },
    h("h1", {}, t("inspection.title")),
    h("p", { class: "muted" }, t("inspection.explain")),
    form, result,
    h("h2", {}, t("inspection.history")), list));
  load();
  return {};
}
