// Connect a resource, or change its settings: every setting with a line on what it does,
// a live preview of the templates, the API's validation errors next to their fields;
// resync and disconnect behind a confirmation that says what will happen.

import { api } from "./api.js";
import { confirmDialog, errorBox, h, notice, replace } from "./dom.js";
import { statusCell } from "./resources.js";

const PLACEHOLDERS = ["title", "customerName", "customerEmail", "location", "notes", "bookingId", "start", "end"];
const DEFAULTS = {
  mailbox: "",
  displayName: "",
  timeZone: "UTC",
  direction: "both",
  inboundChanges: ["created", "updated", "deleted"],
  active: true,
  onOutlookDelete: "ignore",
  onOutlookMove: "ignore",
  blockWorkingElsewhere: false,
  liveSlotCheck: true,
  cancelledEventMode: "delete",
  subjectTemplate: "{title}",
  bodyTemplate: "Booked for {customerName} ({customerEmail}).\n{notes}",
};

const CHOICES = {
  direction: {
    legend: "Sync direction",
    help: "Which way bookings and Outlook events flow for this calendar.",
    options: {
      both: ["Both ways", "Bookings become Outlook events, and the calendar's other events block booking times."],
      out: ["Bookings → Outlook", "Bookings become Outlook events; the calendar's other events do not block booking times."],
      in: ["Outlook → bookings", "The calendar's events block booking times; bookings are not written to Outlook."],
      none: ["None", "Nothing is synced; the resource stays listed with its settings."],
    },
  },
  onOutlookDelete: {
    legend: "When someone deletes a booking's event in Outlook",
    help: "Applies to events this app wrote for a booking (for a panel, the primary member's calendar decides).",
    options: {
      cancel_booking: [
        "Cancel the booking",
        "The booking is cancelled as if it had been cancelled in the booking system: the customer's cancellation follows and the time becomes available. For a panel, the booking is cancelled for every member.",
      ],
      restore_event: [
        "Put the event back",
        "The booking stays as it is and the event is written into the calendar again, overriding the delete.",
      ],
      ignore: [
        "Ignore",
        "The booking remains unchanged and the event stays deleted; no notification is sent and nothing else is updated.",
      ],
    },
  },
  onOutlookMove: {
    legend: "When someone moves a booking's event in Outlook",
    help: "Moving a booking in the calendar reschedules it on behalf of the customer: agree the new time with them.",
    options: {
      reschedule_booking: [
        "Reschedule the booking",
        "The booking's time is updated at once to the event's new time (a time that is already taken is refused and the event put back). For a panel, the booking moves for every member.",
      ],
      restore_event: [
        "Put the event back",
        "The booking keeps its time and the event is moved back to it.",
      ],
      ignore: [
        "Ignore",
        "The booking keeps its time; the moved event stays where it was moved.",
      ],
    },
  },
  cancelledEventMode: {
    legend: "When a booking is cancelled",
    help: "What happens to its event in this calendar.",
    options: {
      delete: ["Delete the event", "The event goes to the mailbox's Deleted Items (it can be recovered there)."],
      prefix: ["Keep it, marked cancelled", "The event stays, its subject starting with “Cancelled: ”."],
    },
  },
};

const CHANGE_KINDS = {
  created: "Created: new Outlook events block booking times.",
  updated: "Updated: changed or moved events are followed.",
  deleted: "Deleted: deleted events free their time (and apply the delete policy above).",
};

export async function formView(main, { resourceId, signal }) {
  let view = null;
  if (resourceId) {
    replace(main, h("h1", { tabindex: "-1" }, "Resource settings"), h("p", {}, "Loading…"));
    try {
      ({ body: view } = await api("GET", `/resources/${encodeURIComponent(resourceId)}`));
    } catch (error) {
      if (signal.aborted) return;
      replace(main, h("h1", { tabindex: "-1" }, "Resource settings"), errorBox(error, () => formView(main, { resourceId, signal })));
      return;
    }
  }
  // The administrator went to another page while this one loaded: that page owns <main>.
  if (signal.aborted) return;
  const settings = { ...DEFAULTS, ...(view?.settings ?? {}) };
  const form = h("form", { id: "resource-form", novalidate: true });
  const summary = h("div", { id: "form-errors", tabindex: "-1" });
  const title = view ? `Settings of ${settings.displayName}` : "Connect a resource";

  const field = (name, label, help, control) =>
    h(
      "div",
      { class: "field", "data-field": name },
      h("label", { for: `f-${name}` }, label),
      h("p", { class: "help", id: `help-${name}` }, help),
      control,
      h("p", { class: "field-error", id: `error-${name}`, hidden: true }),
    );
  const input = (name, attrs = {}) =>
    h("input", { id: `f-${name}`, name, value: settings[name] ?? "", "aria-describedby": `help-${name}`, ...attrs });

  const radios = (name) => {
    const choice = CHOICES[name];
    return h(
      "fieldset",
      { class: "field choices", "data-field": name, "aria-describedby": `help-${name}` },
      h("legend", {}, choice.legend),
      h("p", { class: "help", id: `help-${name}` }, choice.help),
      Object.entries(choice.options).map(([value, [label, what]]) =>
        h(
          "div",
          { class: "choice" },
          h("input", { type: "radio", id: `f-${name}-${value}`, name, value, checked: settings[name] === value, "aria-describedby": `what-${name}-${value}` }),
          h("label", { for: `f-${name}-${value}` }, label),
          h("p", { class: "help", id: `what-${name}-${value}` }, what),
        ),
      ),
      h("p", { class: "field-error", id: `error-${name}`, hidden: true }),
    );
  };
  const checkbox = (name, label, help) =>
    h(
      "div",
      { class: "field check", "data-field": name },
      h("input", { type: "checkbox", id: `f-${name}`, name, checked: Boolean(settings[name]), "aria-describedby": `help-${name}` }),
      h("label", { for: `f-${name}` }, label),
      h("p", { class: "help", id: `help-${name}` }, help),
      h("p", { class: "field-error", id: `error-${name}`, hidden: true }),
    );

  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  const preview = h("div", { id: "preview", class: "preview", "aria-live": "polite" });

  replace(
    form,
    view
      ? h("p", { class: "current" }, "Status: ", statusCell(view.status), ` · resource id ${view.resourceId}`)
      : field("resourceId", "Resource id", "How the booking system names this resource: 1–64 letters, digits, “.”, “_” or “-”, starting with a letter or digit. It cannot be changed later.",
          h("input", { id: "f-resourceId", name: "resourceId", required: true, autocomplete: "off", pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}", "aria-describedby": "help-resourceId" })),
    field("mailbox", "Mailbox", "The Microsoft 365 mailbox (a person's or a room's) whose calendar is kept in sync; one mailbox is one resource.", input("mailbox", { type: "email", required: true, autocomplete: "off" })),
    field("displayName", "Display name", "How the console and the booking system show this resource.", input("displayName", { required: true, maxlength: 200 })),
    field("timeZone", "Time zone", "The calendar's IANA time zone (such as Europe/London): events are written in it, and all-day events block whole days in it.",
      input("timeZone", { list: "zones", required: true, autocomplete: "off" })),
    h("datalist", { id: "zones" }, zones.map((zone) => h("option", { value: zone }))),
    radios("direction"),
    h(
      "fieldset",
      { class: "field choices", "data-field": "inboundChanges", "aria-describedby": "help-inboundChanges" },
      h("legend", {}, "Outlook changes to follow"),
      h("p", { class: "help", id: "help-inboundChanges" }, "Which kinds of change in the Outlook calendar the app acts on; the others are skipped (and logged)."),
      Object.entries(CHANGE_KINDS).map(([kind, what]) =>
        h("div", { class: "choice" },
          h("input", { type: "checkbox", id: `f-inbound-${kind}`, name: "inboundChanges", value: kind, checked: settings.inboundChanges.includes(kind) }),
          h("label", { for: `f-inbound-${kind}` }, what)),
      ),
      h("p", { class: "field-error", id: "error-inboundChanges", hidden: true }),
    ),
    checkbox("active", "Active", "When off, the resource takes no new bookings (availability answers “calendar unavailable”) and nothing is synced, but it stays connected."),
    radios("onOutlookDelete"),
    radios("onOutlookMove"),
    checkbox("blockWorkingElsewhere", "“Working elsewhere” blocks time", "Outlook events shown as Working elsewhere block booking times too; busy, tentative and out-of-office events always do, free ones never."),
    checkbox("liveSlotCheck", "Check the live calendar before confirming", "Before a booking is confirmed, its slot is also read from the live calendar, in case Outlook's notice of a new event is late. Off: the synced copy alone decides."),
    radios("cancelledEventMode"),
    field("subjectTemplate", "Event subject", `The subject of each booking's event. Placeholders: ${PLACEHOLDERS.map((p) => `{${p}}`).join(", ")}; “{{” and “}}” for braces.`, input("subjectTemplate", { required: true, maxlength: 2000 })),
    field("bodyTemplate", "Event body", "The text of each booking's event, with the same placeholders.",
      h("textarea", { id: "f-bodyTemplate", name: "bodyTemplate", rows: 4, required: true, maxlength: 2000, "aria-describedby": "help-bodyTemplate" }, settings.bodyTemplate)),
    h("section", { "aria-labelledby": "preview-title", class: "preview-box" }, h("h2", { id: "preview-title" }, "Preview for a sample booking"), preview),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "save" }, view ? "Save settings" : "Connect")),
  );

  const danger = view ? actions(view, signal) : null;
  replace(
    main,
    h("h1", { tabindex: "-1" }, title),
    view
      ? h("p", { class: "links" },
          h("a", { href: `#/resources/${view.resourceId}/log` }, "Sync log"),
          h("a", { href: `#/resources/${view.resourceId}/bookings` }, "Bookings"))
      : null,
    summary,
    form,
    danger,
  );

  let previewTimer = null;
  let previewSeq = 0;
  const refreshPreview = () => {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(async () => {
      const seq = ++previewSeq;
      const values = read(form);
      let answer;
      try {
        answer = await api("POST", "/template-preview", {
          body: { subjectTemplate: values.subjectTemplate, bodyTemplate: values.bodyTemplate, timeZone: values.timeZone },
        });
      } catch (error) {
        if (seq !== previewSeq || signal.aborted) return;
        showFieldErrors(form, error.details ?? [], ["subjectTemplate", "bodyTemplate", "timeZone"]);
        replace(preview, h("p", { class: "muted" }, error.details?.length ? "Fix the fields marked above to see a preview." : error.message));
        return;
      }
      if (seq !== previewSeq || signal.aborted) return;
      showFieldErrors(form, [], ["subjectTemplate", "bodyTemplate", "timeZone"]);
      const sample = answer.body.sample;
      replace(
        preview,
        h("p", { class: "muted" }, `${sample.title} for ${sample.customer.name}, tomorrow 09:00–10:00 in ${values.timeZone}:`),
        h("dl", {},
          h("dt", {}, "Subject"), h("dd", { id: "preview-subject" }, answer.body.subject),
          h("dt", {}, "Body"), h("dd", { id: "preview-body", class: "pre" }, answer.body.body)),
      );
    }, 250);
  };
  for (const name of ["subjectTemplate", "bodyTemplate", "timeZone"]) {
    form.elements[name].addEventListener("input", refreshPreview);
  }
  refreshPreview();

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = read(form);
    const id = view?.resourceId ?? values.resourceId;
    delete values.resourceId;
    const problems = id && /^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$/.test(id) ? [] : [{ field: "resourceId", message: "1–64 letters, digits, “.”, “_” or “-”, starting with a letter or digit" }];
    if (problems.length) return showErrors(form, summary, problems);
    const save = form.querySelector("#save");
    save.disabled = true;
    try {
      const { status, body } = await api("PUT", `/resources/${encodeURIComponent(id)}`, { body: values });
      showErrors(form, summary, []);
      notice(
        status === 202
          ? `${body.settings.displayName} is connecting: the list shows when it is connected.`
          : `The settings of ${body.settings.displayName} are saved.`,
      );
      if (!signal.aborted) location.hash = "#/resources";
    } catch (error) {
      if (signal.aborted) notice(`${notSaved(error, Boolean(view))} ${error.message}`, "error");
      else showErrors(form, summary, error.details?.length ? error.details : [], error, Boolean(view));
    } finally {
      save.disabled = false;
    }
  });
}

function read(form) {
  const data = new FormData(form);
  const values = {};
  for (const name of ["resourceId", "mailbox", "displayName", "timeZone", "direction", "onOutlookDelete", "onOutlookMove", "cancelledEventMode", "subjectTemplate", "bodyTemplate"]) {
    if (data.has(name)) values[name] = String(data.get(name));
  }
  values.inboundChanges = data.getAll("inboundChanges").map(String);
  for (const name of ["active", "blockWorkingElsewhere", "liveSlotCheck"]) values[name] = data.has(name);
  return values;
}

// A detail's field is a dotted path (`inboundChanges.0`, `body`): its first part names
// the form's field.
function fieldOf(detail) {
  return String(detail.field ?? "").split(".")[0];
}

function showFieldErrors(form, details, names) {
  for (const name of names) {
    const messages = details.filter((d) => fieldOf(d) === name).map((d) => d.message);
    const slot = form.querySelector(`#error-${name}`);
    const box = form.querySelector(`[data-field="${name}"]`);
    if (!slot || !box) continue;
    slot.hidden = !messages.length;
    replace(slot, messages.join("; "));
    const control = box.matches("fieldset") ? box : box.querySelector(`[name="${name}"]`);
    const help = box.querySelector(".help")?.id;
    control?.setAttribute("aria-invalid", messages.length ? "true" : "false");
    control?.setAttribute("aria-describedby", [help, messages.length ? `error-${name}` : null].filter(Boolean).join(" "));
  }
}

// What a failed save says: not saved, or, when no answer came (the request may have
// reached the service before the connection dropped), that it may have been.
function notSaved(error, existing) {
  if (error?.kind !== "unreachable") return "Not saved.";
  return existing
    ? "Perhaps not saved: no answer came, so the settings may or may not have been saved. Reload the page to see which."
    : "Perhaps not connected: no answer came, so the resource may or may not have been saved. The resources list shows whether it was.";
}

function showErrors(form, summary, details, error, existing = false) {
  const names = [...form.querySelectorAll("[data-field]")].map((el) => el.dataset.field);
  showFieldErrors(form, details, names);
  if (!details.length && !error) {
    replace(summary);
    summary.className = "";
    return;
  }
  const unplaced = details.filter((d) => !names.includes(fieldOf(d)));
  summary.className = "error-box";
  summary.setAttribute("role", "alert");
  replace(
    summary,
    h("p", {}, h("strong", {}, details.length ? "Not saved: fix the fields below." : `${notSaved(error, existing)} `), details.length ? null : error?.message),
    details.length
      ? h("ul", {}, details.map((d) => {
          const name = fieldOf(d);
          const target = names.includes(name) ? form.querySelector(`[data-field="${name}"] input, [data-field="${name}"] textarea`) : null;
          return h("li", {}, target ? h("a", { href: `#`, onclick: (e) => { e.preventDefault(); target.focus(); } }, `${d.field}: ${d.message}`) : `${d.field || "request"}: ${d.message}`);
        }))
      : null,
    unplaced.length && error ? h("p", {}, error.message) : null,
  );
  summary.focus();
}

function actions(view, signal) {
  const name = view.settings.displayName;
  const id = encodeURIComponent(view.resourceId);
  const status = h("div", { class: "action-status", role: "status", "aria-live": "polite" });
  // One action at a time: its buttons wait for its answer (no second send meanwhile).
  // `failed` says the action was not done, or, when no answer came (the request may have
  // reached the service before the connection dropped), that it may not have been. The
  // answer leads to the list only while this page is still shown; after the
  // administrator moved on, it is said in the notice and they stay where they went.
  const run = async (method, path, { done, failed }) => {
    const buttons = [...zone.querySelectorAll("button")];
    for (const button of buttons) button.disabled = true;
    replace(status);
    try {
      const { body } = await api(method, path);
      notice(done(body));
      if (!signal.aborted) location.hash = "#/resources";
    } catch (error) {
      const lead = failed(error.kind === "unreachable");
      if (signal.aborted) notice(`${lead} ${error.message}`, "error");
      else replace(status, errorBox(error, () => run(method, path, { done, failed }), lead));
    } finally {
      for (const button of buttons) button.disabled = false;
    }
  };
  const zone = h(
    "section",
    { class: "danger-zone", "aria-labelledby": "danger-title" },
    h("h2", { id: "danger-title" }, "Resync or disconnect"),
    h("div", { class: "actions" },
      h("button", { type: "button", id: "resync", class: "secondary", onclick: async () => {
        const ok = await confirmDialog({
          title: `Resync ${name}?`,
          lines: [
            `Every event this app wrote to ${view.settings.mailbox} is deleted and written again from the bookings, so the calendar matches them exactly (events moved or edited in Outlook go back to their booking).`,
            "Then the calendar's busy time is read again. Bookings are not changed, and availability keeps answering meanwhile.",
          ],
          confirmLabel: "Resync",
        });
        if (ok) {
          await run("POST", `/resources/${id}/resync`, {
            done: () => `Resync of ${name} started: the sync log shows when it is done.`,
            failed: (unsure) => (unsure ? `The resync of ${name} may not have started: no answer came.` : `The resync of ${name} was not started.`),
          });
        }
      } }, "Resync…"),
      h("button", { type: "button", id: "disconnect", class: "danger", onclick: async () => {
        const ok = await confirmDialog({
          title: `Disconnect ${name}?`,
          lines: [
            `The app stops following ${view.settings.mailbox}: its subscription is dropped and its time is no longer offered for booking.`,
            `The events this app wrote stay in the calendar (${view.mappedEvents} now); bookings are not cancelled. Saving the settings again reconnects it.`,
          ],
          confirmLabel: "Disconnect, keep events",
        });
        if (ok) {
          await run("DELETE", `/resources/${id}`, {
            done: () => `${name} is disconnected; its events were kept.`,
            failed: (unsure) => (unsure ? `${name} may not have been disconnected: no answer came.` : `${name} was not disconnected.`),
          });
        }
      } }, "Disconnect…"),
      h("button", { type: "button", id: "disconnect-remove", class: "danger", onclick: async () => {
        const ok = await confirmDialog({
          title: `Disconnect ${name} and remove our events?`,
          lines: [
            `The app stops following ${view.settings.mailbox} and deletes every event it wrote there (${view.mappedEvents} now; they go to Deleted Items). Outlook's other events are not touched; bookings are not cancelled.`,
            "The list shows “Disconnecting” until the last event is removed. Saving the settings again reconnects it and writes the events back.",
          ],
          confirmLabel: "Disconnect and remove events",
        });
        if (ok) {
          await run("DELETE", `/resources/${id}?removeEvents=true`, {
            done: (body) => body.status.state === "disconnecting" ? `${name} is disconnecting: its events are being removed.` : `${name} is disconnected; its events were removed.`,
            failed: (unsure) => (unsure ? `${name} may not have been disconnected, nor its events removed: no answer came.` : `${name} was not disconnected; no event was removed.`),
          });
        }
      } }, "Disconnect and remove events…"),
    ),
    status,
  );
  return zone;
}
