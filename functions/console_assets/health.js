// Health: storage, Graph, failing resources, subscriptions close to expiry.

import { api } from "./api.js";
import { errorBox, h, replace } from "./dom.js";

export async function healthView(main) {
  const region = h("div", { id: "health-region", "aria-live": "polite" });
  replace(
    main,
    h("h1", { tabindex: "-1" }, "Health"),
    h("div", { class: "toolbar" }, h("button", { type: "button", class: "secondary", onclick: load }, "Check again")),
    region,
  );
  async function load() {
    let body;
    try {
      // 503 carries the same report: something fails.
      ({ body } = await api("GET", "/health/details", { accept: [503] }));
    } catch (error) {
      replace(region, errorBox(error, load));
      return;
    }
    replace(
      region,
      h("p", { class: `overall ${body.ok ? "ok" : "bad"}`, id: "overall" }, body.ok ? "Everything works." : "Something fails: see below."),
      h("dl", { class: "health" },
        component("Storage", body.storage),
        body.graph ? component("Microsoft Graph", body.graph) : null),
      body.resources ? resources(body.resources) : null,
    );
  }
  await load();
}

function component(name, health) {
  return [
    h("dt", {}, name),
    h("dd", {},
      h("span", { class: `state ${health.ok ? "state-connected" : "state-failing"}` }, health.ok ? "Working" : "Failing"),
      health.reason ? h("span", { class: "reason" }, `: ${health.reason}`) : null,
      health.detail ? h("p", { class: "help" }, health.detail) : null),
  ];
}

function resources(report) {
  const links = (ids) =>
    ids.length
      ? h("ul", {}, ids.map((id) => h("li", {}, h("a", { href: `#/resources/${id}/edit` }, id))))
      : h("p", { class: "muted" }, "None.");
  return h(
    "section",
    { "aria-labelledby": "resources-title" },
    h("h2", { id: "resources-title" }, `Resources (${report.total})`),
    h("h3", {}, "Failing"),
    links(report.failing),
    h("h3", {}, "Subscriptions close to expiry (or missing)"),
    links(report.subscriptionsExpiring),
  );
}
