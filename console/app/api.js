// The admin API as the console uses it: JSON in and out, the session's CSRF
// token on every change, and back to the login page once the session ends.

import { LiveSocket } from "/common/live.js";

let csrfToken = "";

export class ApiError extends Error {
  /** @param {number} status  @param {string} message */
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** To the login page, which brings the browser back to this route. */
export function toLogin() {
  window.location.assign("/login" + window.location.hash);
}

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "the controller cannot be reached");
  }
  return answer(response);
}

/** The JSON of an answer; a refusal as an ApiError with the controller's message. */
async function answer(response) {
  if (response.status === 401) {
    toLogin();
    throw new ApiError(401, "the session has ended");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, data?.error?.message ?? `the controller answered ${response.status}`);
  }
  return data;
}

/**
 * Bytes as the request body, as they are (an upload: a File), with the CSRF token; the JSON answer.
 * @param {string} path  @param {Blob} blob
 */
export async function upload(path, blob) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/octet-stream", "X-CSRF-Token": csrfToken },
      body: blob,
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "the controller cannot be reached");
  }
  return answer(response);
}

export const get = (path) => call("GET", path);
export const post = (path, body = {}) => call("POST", path, body);
export const put = (path, body) => call("PUT", path, body);
export const del = (path) => call("DELETE", path);

/** Who is signed in; keeps the session's CSRF token for later changes. */
export async function loadSession() {
  const session = await get("/admin/api/session");
  csrfToken = session.csrf_token ?? "";
  return session;
}

/** A websocket URL on this tier (the session cookie goes with the upgrade). */
export function wsUrl(path) {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${window.location.host}${path}`;
}

/**
 * A live websocket on this tier (common/live.js): `path` is asked again on
 * each connect. A lost socket makes one API call, so that an ended session
 * (close code 1008, or a logout elsewhere) goes to the login page.
 * @param {() => string} path
 * @param {Omit<import("/common/live.js").LiveSocketOptions, "url">} options
 */
export function liveSocket(path, options) {
  return new LiveSocket({
    ...options,
    url: () => wsUrl(path()),
    onState(status) {
      if (status.state === "retrying" || status.state === "ended") get("/admin/api/session").catch(() => {});
      options.onState?.(status);
    },
  });
}
