// The API client: JSON in and out, the session's CSRF token on every unsafe request, errors as ApiError
// with the server's `detail` made readable.

const BASE = "/api/v1";
const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);
let csrfToken = null;
const unauthorizedListeners = new Set();

export class ApiError extends Error {
  constructor(status, detail, body) {
    super(detail);
    this.status = status;
    this.body = body;
  }
}

export function setCsrf(token) {
  csrfToken = token || null;
}

/** Called with no argument when a request finds the session ended (401). */
export function onUnauthorized(fn) {
  unauthorizedListeners.add(fn);
}

/** The server's `detail` as one line: a string, a list of field errors, or pydantic's errors. */
export function detailText(body, status) {
  const detail = body && typeof body === "object" ? body.detail : body;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((e) => {
        if (typeof e === "string") return e;
        const where = e.field ?? (Array.isArray(e.loc) ? e.loc.filter((p) => p !== "body").join(".") : "");
        const line = e.line ? `line ${e.line}: ` : "";
        return `${line}${where ? `${where}: ` : ""}${e.message ?? e.msg ?? JSON.stringify(e)}`;
      })
      .join("; ");
  }
  return `request failed (HTTP ${status})`;
}

export async function api(path, { method = "GET", json, body, contentType, query, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (contentType) {
    headers["Content-Type"] = contentType;
  }
  if (UNSAFE.has(method) && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  let url = BASE + path;
  if (query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      for (const v of Array.isArray(value) ? value : [value]) {
        if (v !== undefined && v !== null && v !== "") params.append(key, v);
      }
    }
    const text = params.toString();
    if (text) url += (url.includes("?") ? "&" : "?") + text;
  }
  const response = await fetch(url, { method, headers, body, credentials: "same-origin", signal });
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json().catch(() => null) : await response.text();
  if (!response.ok) {
    if (response.status === 401 && path !== "/login" && path !== "/session") {
      for (const fn of unauthorizedListeners) fn();
    }
    throw new ApiError(response.status, detailText(data, response.status), data);
  }
  return data;
}

/** `api()` that answers `fallback` instead of failing when the route is missing or refused. */
export async function apiOr(fallback, path, options) {
  try {
    return await api(path, options);
  } catch (err) {
    if (err instanceof ApiError && [403, 404, 405].includes(err.status)) return fallback;
    throw err;
  }
}
