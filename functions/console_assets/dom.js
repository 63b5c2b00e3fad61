// A few DOM helpers: elements are built with textContent only (never innerHTML), so no
// text from the API or a user can become markup.

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      element.className = value;
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const withSeconds = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** A <time> for an ISO instant ("—" when there is none), shown in the browser's zone. */
export function when(iso, { seconds = false } = {}) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const format = seconds ? withSeconds : dateTime;
  return h("time", { datetime: iso, title: iso }, format.format(new Date(iso)));
}

export function notice(text, kind = "info") {
  const region = document.getElementById("notice");
  region.dataset.views = "0";
  replace(region, text ? h("p", { class: `notice-${kind}` }, text) : null);
}

/**
 * An error box (role="alert") for a failed API call, with an optional retry button.
 * `lead` says what did not happen: a view's data by default, or an action's own words.
 */
export function errorBox(error, retry, lead = "Could not load this.") {
  return h(
    "div",
    { class: "error-box", role: "alert" },
    h("p", {}, h("strong", {}, `${lead} `), error.message),
    retry ? h("button", { type: "button", class: "secondary", onclick: retry }, "Try again") : null,
  );
}

/** Asks with the page's <dialog>; resolves true when confirmed. */
export function confirmDialog({ title, lines, confirmLabel }) {
  const dialog = document.getElementById("confirm");
  replace(document.getElementById("confirm-title"), title);
  replace(document.getElementById("confirm-text"), lines.map((line) => h("p", {}, line)));
  replace(document.getElementById("confirm-ok"), confirmLabel);
  const opener = document.activeElement;
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        opener?.focus?.();
        resolve(dialog.returnValue === "confirm");
      },
      { once: true },
    );
    dialog.returnValue = "";
    dialog.showModal();
  });
}
