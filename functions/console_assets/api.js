// Calls to the app's JSON API, same origin. Every failure becomes an ApiError whose
// message a person can act on: sign in, ask for the role, retry, or fix a field.

const BASE = "/api";

export class ApiError extends Error {
  constructor(kind, message, { status = 0, code = null, details = [] } = {}) {
    super(message);
    this.kind = kind; // "unreachable" | "unauthenticated" | "forbidden" | "busy" | "http"
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export const MESSAGES = {
  unreachable:
    "The service cannot be reached. Check your network connection, then try again.",
  unauthenticated:
    "You are not signed in (or your sign-in has expired). Sign in again: reload the page.",
  forbidden:
    "You need the administrator role to use the console. Ask your tenant's " +
    "administrator to assign you the role, then sign in again.",
  busy: "The service is busy right now. Wait a moment, then try again.",
};

/**
 * Calls the API. `accept` lists the statuses that carry an answer (2xx always do).
 * Returns {status, body}; throws ApiError for anything else.
 */
export async function api(method, path, { body, accept = [] } = {}) {
  // A redirect is not followed: App Service Authentication sends a signed-out browser to
  // the sign-in page (another origin, which the page's policy does not let it call), and
  // that means "sign in", not "unreachable". X-Requested-With marks a script's call, which
  // sign-in layers that honour it answer with 401 instead of the redirect.
  const init = {
    method,
    headers: { Accept: "application/json", "X-Requested-With": "XMLHttpRequest" },
    credentials: "same-origin",
    redirect: "manual",
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(BASE + path, init);
  } catch {
    throw new ApiError("unreachable", MESSAGES.unreachable);
  }
  if (response.type === "opaqueredirect") {
    throw new ApiError("unauthenticated", MESSAGES.unauthenticated, { status: 302 });
  }
  const text = await response.text().catch(() => "");
  let payload = null;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = null;
  }
  if (response.ok || accept.includes(response.status)) {
    return { status: response.status, body: payload };
  }
  if (response.status === 401) {
    throw new ApiError("unauthenticated", MESSAGES.unauthenticated, { status: 401 });
  }
  if (response.status === 403) {
    const needed = payload?.error?.message;
    const message = needed ? `${MESSAGES.forbidden} (${needed})` : MESSAGES.forbidden;
    throw new ApiError("forbidden", message, { status: 403, code: payload?.error?.code });
  }
  if (response.status === 429) {
    throw new ApiError("busy", MESSAGES.busy, { status: 429 });
  }
  const error = payload?.error;
  if (error) {
    const retry = response.headers.get("Retry-After");
    const suffix = retry ? ` Try again in ${retry} s.` : "";
    throw new ApiError("http", `${error.message}${suffix}`, {
      status: response.status,
      code: error.code,
      details: error.details ?? [],
    });
  }
  if (response.status >= 500 && response.status !== 501 && !text) {
    // No answer from the app itself: the platform in front, or the app is not running.
    throw new ApiError("unreachable", `${MESSAGES.unreachable} (HTTP ${response.status})`, {
      status: response.status,
    });
  }
  throw new ApiError("http", `The service answered HTTP ${response.status}.`, {
    status: response.status,
  });
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
