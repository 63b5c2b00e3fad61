// A resource's bookings over a window, each with its sync state per calendar.

import { api, query } from "./api.js";
import { errorBox, h, replace, when } from "./dom.js";

const DAY_MS = 24 * 60 * 60 * 1000;

function day(date) {
  return date.toISOString().slice(0, 10);
}

export async function bookingsView(main, { resourceId, params }) {
  const from = params.get("from") ?? day(new Date());
  const to = params.get("to") ?? day(new Date(Date.now() + 14 * DAY_MS));
  const form = h(
    "form",
    { class: "toolbar", id: "window" },
    h("label", { for: "from" }, "From"),
    h("input", { type: "date", id: "from", name: "from", value: from, required: true }),
    h("label", { for: "to" }, "To (inclusive)"),
    h("input", { type: "date", id: "to", name: "to", value: to, required: true }),
    h("button", { type: "submit", class: "secondary" }, "Show"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#/resources/${resourceId}/bookings?from=${form.elements.from.value}&to=${form.elements.to.value}`;
  });
  const region = h("div", { id: "bookings-region", "aria-live": "polite" });
  replace(
    main,
    h("h1", { tabindex: "-1" }, `Bookings of ${resourceId}`),
    h("p", { class: "links" },
      h("a", { href: `#/resources/${resourceId}/edit` }, "Settings"),
      h("a", { href: `#/resources/${resourceId}/log` }, "Sync log")),
    form,
    h("p", { class: "help" }, "Days in UTC. Each booking shows the state of its event in every booked calendar."),
    region,
  );
  const start = `${from}T00:00:00Z`;
  const end = new Date(Date.parse(`${to}T00:00:00Z`) + DAY_MS).toISOString();
  async function load() {
    let body;
    try {
      ({ body } = await api("GET", `/bookings${query({ resourceId, start, end })}`));
    } catch (error) {
      replace(region, errorBox(error, load));
      return;
    }
    replace(region, body.value.length ? table(body.value) : h("p", { class: "empty" }, "No bookings in this window."));
  }
  await load();
}

function table(bookings) {
  const label = (text) => ({ "data-label": text });
  return h(
    "table",
    { class: "stack", id: "bookings" },
    h("caption", {}, `${bookings.length} bookings`),
    h("thead", {}, h("tr", {}, ["Start", "End", "Title", "Customer", "Status", "Calendars"].map((n) => h("th", { scope: "col" }, n)))),
    h(
      "tbody",
      {},
      bookings.map((b) =>
        h(
          "tr",
          { "data-booking": b.bookingId },
          h("td", label("Start"), when(b.start)),
          h("td", label("End"), when(b.end)),
          h("th", { scope: "row", ...label("Title") }, b.title, h("span", { class: "id sub" }, b.bookingId)),
          h("td", label("Customer"), b.customer?.name ?? ""),
          h("td", label("Status"), h("span", { class: `booking booking-${b.status}` }, b.status)),
          h(
            "td",
            label("Calendars"),
            h("ul", { class: "sync" }, b.sync.map((s) =>
              h("li", {},
                h("span", { class: "id" }, s.resourceId), " ",
                h("span", { class: `sync-state sync-${s.state}` }, s.state),
                s.error ? h("span", { class: "reason" }, `: ${s.error}`) : null,
                s.warning ? h("span", { class: "reason" }, ` (${s.warning})`) : null))),
          ),
        ),
      ),
    ),
  );
}
