// The console: hash routes, one view at a time in <main>. Each view loads its data from
// the JSON API and says so when it cannot.

import { bookingsView } from "./bookings.js";
import { notice } from "./dom.js";
import { formView } from "./form.js";
import { healthView } from "./health.js";
import { logView } from "./log.js";
import { resourcesView } from "./resources.js";

const ROUTES = [
  [/^\/resources$/, "resources", "Resources", (main, c) => resourcesView(main, c)],
  [/^\/connect$/, "connect", "Connect a resource", (main, c) => formView(main, c)],
  [/^\/resources\/([^/]+)\/edit$/, "resources", "Resource settings", (main, c) => formView(main, c)],
  [/^\/resources\/([^/]+)\/log$/, "resources", "Sync log", (main, c) => logView(main, c)],
  [/^\/resources\/([^/]+)\/bookings$/, "resources", "Bookings", (main, c) => bookingsView(main, c)],
  [/^\/health$/, "health", "Health", (main) => healthView(main)],
];

let current = null;
let firstView = true;

async function show() {
  // An in-page anchor (such as #main) is not a view.
  if (location.hash && !location.hash.startsWith("#/")) return;
  const [path, search = ""] = location.hash.replace(/^#/, "").split("?");
  const route = ROUTES.find(([pattern]) => pattern.test(path));
  if (!route) {
    location.replace("#/resources");
    return;
  }
  const [pattern, nav, title, render] = route;
  const match = path.match(pattern);
  // A link whose %-escapes do not decode names no resource: the list, with a word on why,
  // before anything of the current view changes.
  let resourceId = null;
  try {
    resourceId = match[1] ? decodeURIComponent(match[1]) : null;
  } catch {
    notice("That link does not name a resource (it is not correctly encoded): here is the list.");
    location.replace("#/resources");
    return;
  }
  current?.abort();
  current = new AbortController();
  const { signal } = current;
  const first = firstView;
  firstView = false;
  const main = document.getElementById("main");
  document.title = `${title} · Booking Sync console`;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const context = { resourceId, params: new URLSearchParams(search), signal };
  main.setAttribute("aria-busy", "true");
  try {
    await render(main, context);
  } finally {
    // A view left meanwhile speaks no more for <main>: the newer one does.
    if (!signal.aborted) main.setAttribute("aria-busy", "false");
  }
  // A new view: move focus to its heading, so a screen reader announces it (not on the
  // first page load, where the browser starts at the top).
  if (!signal.aborted && !first) main.querySelector("h1")?.focus();
}

window.addEventListener("hashchange", () => {
  show();
});
// "Skip to content" moves focus to the view without touching the route.
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  document.getElementById("main").focus();
});
// A notice (saved, connecting…) stays for the view it leads to, and goes after that.
window.addEventListener("hashchange", () => {
  const region = document.getElementById("notice");
  const views = Number(region.dataset.views ?? 0) + 1;
  region.dataset.views = String(views);
  if (views > 1) region.replaceChildren();
});
show();
