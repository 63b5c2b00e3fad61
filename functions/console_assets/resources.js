// The resources table: every resource with its connection status; filter by status.

import { api } from "./api.js";
import { errorBox, h, replace, when } from "./dom.js";

export const STATES = {
  connecting: "Connecting",
  connected: "Connected",
  failing: "Failing",
  disconnecting: "Disconnecting",
  disconnected: "Disconnected",
};
const DIRECTIONS = { both: "Both ways", in: "Outlook → bookings", out: "Bookings → Outlook", none: "None" };
// States that change on their own: the list looks again until none is left.
const MOVING = new Set(["connecting", "disconnecting"]);
const POLL_MS = 1500;

export function statusCell(status) {
  return h(
    "span",
    { class: `state state-${status.state}` },
    STATES[status.state] ?? status.state,
    status.reason ? h("span", { class: "reason" }, `: ${status.reason}`) : null,
  );
}

export async function resourcesView(main, { params, signal }) {
  const filter = params.get("status") ?? "";
  const select = h(
    "select",
    { id: "status-filter", name: "status" },
    h("option", { value: "" }, "All"),
    Object.entries(STATES).map(([value, label]) =>
      h("option", { value, selected: value === filter }, label),
    ),
  );
  select.addEventListener("change", () => {
    location.hash = select.value ? `#/resources?status=${select.value}` : "#/resources";
  });
  const region = h("div", { id: "resources-region", "aria-live": "polite", "aria-busy": "true" });
  replace(
    main,
    h("h1", { tabindex: "-1" }, "Resources"),
    h(
      "div",
      { class: "toolbar" },
      h("label", { for: "status-filter" }, "Show status"),
      select,
      h("a", { href: "#/connect", class: "button" }, "Connect a resource"),
    ),
    region,
  );

  async function load() {
    region.setAttribute("aria-busy", "true");
    let body;
    try {
      ({ body } = await api("GET", "/resources"));
    } catch (error) {
      replace(region, errorBox(error, load));
      region.setAttribute("aria-busy", "false");
      return;
    }
    if (signal.aborted) return;
    const shown = body.value.filter((r) => !filter || r.status.state === filter);
    replace(region, table(shown, body.value.length, filter));
    region.setAttribute("aria-busy", "false");
    if (body.value.some((r) => MOVING.has(r.status.state))) {
      setTimeout(() => signal.aborted || load(), POLL_MS);
    }
  }
  await load();
}

function table(resources, total, filter) {
  if (!resources.length) {
    return h(
      "p",
      { class: "empty" },
      total ? `No resource is ${STATES[filter]?.toLowerCase() ?? filter}.` : "No resource is connected yet. ",
      total ? null : h("a", { href: "#/connect" }, "Connect the first one"),
    );
  }
  const label = (text) => ({ "data-label": text });
  return h(
    "table",
    { class: "stack", id: "resources" },
    h("caption", {}, `${resources.length} of ${total} resources`),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Resource", "Mailbox", "Direction", "Status", "Last sync", "Subscription expires", "Mapped events", "Actions"].map(
          (name) => h("th", { scope: "col" }, name),
        ),
      ),
    ),
    h(
      "tbody",
      {},
      resources.map((r) =>
        h(
          "tr",
          { "data-resource": r.resourceId },
          h(
            "th",
            { scope: "row", class: "wrap", ...label("Resource") },
            h("a", { href: `#/resources/${r.resourceId}/edit` }, r.settings.displayName),
            h("span", { class: "id sub" }, r.resourceId),
          ),
          h("td", { ...label("Mailbox"), class: "wrap" }, r.settings.mailbox),
          h("td", label("Direction"), DIRECTIONS[r.settings.direction] ?? r.settings.direction),
          h("td", { ...label("Status"), class: "status" }, statusCell(r.status)),
          h("td", label("Last sync"), when(r.status.lastSyncAt)),
          h("td", label("Subscription expires"), when(r.subscription.expiresAt)),
          h("td", { ...label("Mapped events"), class: "number" }, String(r.mappedEvents)),
          h(
            "td",
            label("Actions"),
            h(
              "span",
              { class: "links" },
              h("a", { href: `#/resources/${r.resourceId}/edit`, "aria-label": `Settings of ${r.settings.displayName}` }, "Settings"),
              h("a", { href: `#/resources/${r.resourceId}/log`, "aria-label": `Sync log of ${r.settings.displayName}` }, "Sync log"),
              h("a", { href: `#/resources/${r.resourceId}/bookings`, "aria-label": `Bookings of ${r.settings.displayName}` }, "Bookings"),
            ),
          ),
        ),
      ),
    ),
  );
}
