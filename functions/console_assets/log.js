// A resource's sync log: newest first, filter by outcome, a page at a time.

import { api, query } from "./api.js";
import { errorBox, h, replace, when } from "./dom.js";

const PAGE_SIZE = 25; // `?size=` sets another (1-500)
const OUTCOMES = { ok: "OK", skipped: "Skipped", failed: "Failed" };

export async function logView(main, { resourceId, params }) {
  const outcome = params.get("outcome") ?? "";
  const size = Math.min(500, Math.max(1, Number(params.get("size")) || PAGE_SIZE));
  const id = encodeURIComponent(resourceId);
  const select = h(
    "select",
    { id: "outcome-filter" },
    h("option", { value: "" }, "All"),
    Object.entries(OUTCOMES).map(([value, label]) => h("option", { value, selected: value === outcome }, label)),
  );
  select.addEventListener("change", () => {
    const search = new URLSearchParams(params);
    if (select.value) search.set("outcome", select.value);
    else search.delete("outcome");
    location.hash = `#/resources/${resourceId}/log${search.size ? `?${search}` : ""}`;
  });
  const region = h("div", { id: "log-region", "aria-live": "polite" });
  replace(
    main,
    h("h1", { tabindex: "-1" }, `Sync log of ${resourceId}`),
    h("p", { class: "links" },
      h("a", { href: `#/resources/${resourceId}/edit` }, "Settings"),
      h("a", { href: `#/resources/${resourceId}/bookings` }, "Bookings")),
    h("div", { class: "toolbar" }, h("label", { for: "outcome-filter" }, "Show outcome"), select),
    region,
  );

  // Cursors of the pages shown so far: [undefined] is the newest page.
  const cursors = [undefined];
  async function load(index) {
    region.setAttribute("aria-busy", "true");
    let body;
    try {
      ({ body } = await api("GET", `/resources/${id}/sync-log${query({ limit: size, outcome, after: cursors[index] })}`));
    } catch (error) {
      replace(region, errorBox(error, () => load(index)));
      region.setAttribute("aria-busy", "false");
      return;
    }
    cursors[index + 1] = body.nextPage ?? undefined;
    const pager = h(
      "nav",
      { class: "pager", "aria-label": "Sync log pages" },
      h("button", { type: "button", class: "secondary", id: "newer", disabled: index === 0, onclick: () => load(index - 1) }, "← Newer"),
      h("span", {}, `Page ${index + 1}`),
      h("button", { type: "button", class: "secondary", id: "older", disabled: !body.nextPage, onclick: () => load(index + 1) }, "Older →"),
    );
    replace(region, body.value.length ? table(body.value, index) : h("p", { class: "empty" }, "No entries."), pager);
    region.setAttribute("aria-busy", "false");
  }
  await load(0);
}

function table(entries, index) {
  const label = (text) => ({ "data-label": text });
  return h(
    "table",
    { class: "stack", id: "sync-log" },
    h("caption", {}, `Entries, newest first (page ${index + 1})`),
    h("thead", {}, h("tr", {}, ["When", "Direction", "Action", "Outcome", "Detail", "Booking", "Event"].map((n) => h("th", { scope: "col" }, n)))),
    h(
      "tbody",
      {},
      entries.map((e) =>
        h(
          "tr",
          {},
          h("td", label("When"), when(e.at, { seconds: true })),
          h("td", label("Direction"), e.direction),
          h("td", label("Action"), e.action),
          h("td", label("Outcome"), h("span", { class: `outcome outcome-${e.outcome}` }, OUTCOMES[e.outcome] ?? e.outcome)),
          h("td", { ...label("Detail"), class: "wrap" }, e.detail ?? ""),
          h("td", { ...label("Booking"), class: "id" }, e.bookingId ?? ""),
          h("td", { ...label("Event"), class: "id wrap" }, e.eventId ?? ""),
        ),
      ),
    ),
  );
}
