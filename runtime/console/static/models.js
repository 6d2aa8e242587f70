// The Models panel: what each registered id serves, from which folder, how, and whether it is a test model.

import { $, clear, el } from "./dom.js";

export function showModels(overview) {
  const body = $("#model-table tbody");
  clear(body);
  const models = overview.models;
  if (!models.length) {
    for (const spec of overview.configured_models) {
      body.append(
        el(
          "tr",
          { class: "pending" },
          el("td", { text: spec.ids.join(", ") }),
          el("td", {}, el("code", { text: spec.folder })),
          el("td", { colspan: 4, text: overview.state_detail || overview.state }),
        ),
      );
    }
  }
  for (const model of models) {
    const variants = Object.entries(model.graph_variants)
      .filter(([, variant]) => variant !== model.variant)
      .map(([graph, variant]) => `${graph}: ${variant}`);
    const warning = model.random_weights
      ? el("span", { class: "badge danger", text: "random weights: answers are noise" })
      : el("span", { class: "badge", text: "trained weights" });
    body.append(
      el(
        "tr",
        { "data-model": model.ids[0], "data-random-weights": model.random_weights },
        el("td", {}, ...model.ids.flatMap((id, i) => (i ? [el("br"), el("code", { text: id })] : [el("code", { text: id })]))),
        el("td", {}, el("code", { text: model.folder })),
        el("td", { text: variants.length ? `${model.variant} (${variants.join(", ")})` : model.variant }),
        el("td", { text: `${model.backend} · ${model.providers.join(", ")}` }),
        el("td", { text: model.load_s === null ? "-" : `${model.load_s.toFixed(2)} s` }),
        el("td", {}, warning),
      ),
    );
  }
  $("#random-warning").hidden = !models.some((model) => model.random_weights);
}
