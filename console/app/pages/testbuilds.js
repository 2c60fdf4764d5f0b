// Test builds: packages anyone with a token may ask the swarm to build,
// rate-limited, in a queue of their own, never released (controller/testbuilds.py).
//
// Three parts:
// - Tokens: issue one for a user (its rate, burst and cap on queued builds);
//   the secret is in the answer once, shown here once with a copy button and
//   gone when the admin is done with it or leaves the page. Revoke asks first;
//   a revoked token stays listed as revoked.
// - The queue (queued and running builds: position, estimate, drone) and the
//   history (the result: exit, reason, the packages under /binhost/test/).
//   Cancel asks first; a queued build leaves the queue, a running one is
//   stopped by the runner on its drone.
// - One build's log: the controller's copy, followed (?follow=1, one
//   streamed answer read as it comes) while the build runs.
//
// Polled every POLL_MS while shown; rows are kept by id and updated in place
// (a row moves from the queue to the history when its build ends), so a poll
// never takes the focus away.

import { del, get, post } from "../api.js";
import { ConfirmDialog, Toaster, ago, duration, el, pagePoller, setText } from "../ui.js";

/**
 * @typedef {"queued" | "running" | "succeeded" | "failed" | "cancelled"} TestBuildState
 */
/**
 * The admin view of a test build (GET /admin/api/test-builds).
 * @typedef {object} TestBuild
 * @property {string} id
 * @property {string} package the atom as asked
 * @property {string} cpv what it resolved to
 * @property {string[]} use USE flags asked for
 * @property {string} user
 * @property {TestBuildState} state
 * @property {string} queued_at
 * @property {string | null} started_at
 * @property {string | null} finished_at
 * @property {string} drone
 * @property {number | null} exit_code
 * @property {string} reason
 * @property {string} log_tail
 * @property {string[]} packages URLs under /binhost/test/
 * @property {number | null} position queued only
 * @property {number | null} estimate_s queued only
 * @property {string} token_id
 * @property {string} build_id the StartBuild's ("" until it runs)
 * @property {string} notify_email "" for none
 * @property {string} webhook_url "" for none
 * @property {string} notified "" not yet, "sent", "failed: why"
 */
/**
 * @typedef {object} Token
 * @property {string} id
 * @property {string} user
 * @property {string} rate "5/h"
 * @property {number} burst
 * @property {number} max_queued
 * @property {string} created_at
 * @property {string} created_by
 * @property {string | null} revoked_at
 * @property {string | null} last_used_at
 * @property {number} queued
 */
/** @typedef {Token & { secret: string }} NewToken the answer to POST /admin/api/test-build-tokens, the one with the secret */

const POLL_MS = 2000;
// Each poll asks for every queued and running build (the API's most: the
// global queued cap is 100 by default) and the newest of the history.
const QUEUE_LISTED = 1000;
const HISTORY_LISTED = 50;
const LOG_KEPT = 512 * 1024; // characters of a followed log kept on the page (the head goes first)
const ACTIVE = new Set(["queued", "running"]);
const STEP = { queued: 0, running: 1, succeeded: 2, failed: 2, cancelled: 2 };
const TOKEN_FIELDS = ["user", "rate", "burst", "max_queued"];

const buildPath = (id, action = "") => `/admin/api/test-builds/${encodeURIComponent(id)}${action ? `/${action}` : ""}`;
const tokenPath = (id) => `/admin/api/test-build-tokens/${encodeURIComponent(id)}`;

/** "2026-12-05 03:00:12" in the browser's time zone. */
function stamp(at) {
  if (!at) return "–";
  const d = new Date(at);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

const plural = (n, word, many = `${word}s`) => `${n} ${n === 1 ? word : many}`;

/** "admin:alice" -> "alice". */
function who(by) {
  return by ? by.replace(/^admin:/, "") : "someone";
}

/** Seconds between two instants of the API (null while one is missing). */
function between(from, to) {
  if (!from || !to) return null;
  return Math.max(0, (Date.parse(to) - Date.parse(from)) / 1000);
}

/** The last path part of a package URL: "app-misc/foo-1.0-1.gpkg.tar" -> "foo-1.0-1.gpkg.tar". */
function fileName(url) {
  return decodeURIComponent(url.split("/").pop() || url);
}

/**
 * What a build's times say: the latest step, how long it took (or ""), and the instant to show on hover.
 * @param {TestBuild} b  @param {number} now
 * @returns {{ text: string, sub: string, at: string | null }}
 */
export function timesOf(b, now = Date.now()) {
  if (b.finished_at) {
    const took = between(b.started_at, b.finished_at);
    return { text: `ended ${ago(b.finished_at, now)}`, sub: took === null ? "never started" : `took ${duration(took)}`, at: b.finished_at };
  }
  if (b.started_at) return { text: `started ${ago(b.started_at, now)}`, sub: `queued ${ago(b.queued_at, now)}`, at: b.started_at };
  return { text: `queued ${ago(b.queued_at, now)}`, sub: "", at: b.queued_at };
}

/** An estimate in words: "under a minute", "about 5 min", "about 2 h 10 min". */
export function roughly(seconds) {
  if (seconds < 60) return "under a minute";
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `about ${minutes} min`;
  return `about ${Math.floor(minutes / 60)} h${minutes % 60 ? ` ${minutes % 60} min` : ""}`;
}

/**
 * The result column in words: where a queued build stands, or how a build ended.
 * @param {TestBuild} b
 */
export function resultOf(b) {
  if (b.state === "queued") {
    const place = b.position ? `#${b.position} in the queue` : "in the queue";
    return b.estimate_s !== null && b.estimate_s !== undefined ? `${place} · starts in ${roughly(b.estimate_s)}` : place;
  }
  if (b.state === "running") return b.drone ? `building on ${b.drone}` : "starting";
  if (b.state === "succeeded") return plural(b.packages.length, "package");
  const exit = b.exit_code === null || b.exit_code === undefined ? "" : `exit ${b.exit_code}`;
  return [exit, b.reason].filter(Boolean).join(" · ") || b.state;
}

/**
 * The token dialog's field a refusal of the controller names ("rate: ..."), or null.
 * @param {string} message
 */
export function tokenFieldOf(message) {
  const text = message.toLowerCase().replace("max queued", "max_queued");
  const first = text.match(/^([a-z_]+)\b/);
  if (first && TOKEN_FIELDS.includes(first[1])) return first[1];
  return TOKEN_FIELDS.find((f) => new RegExp(`\\b${f}\\b`).test(text)) ?? null;
}

/** One test build's row, in the queue or the history; built once, updated by each poll. */
class BuildRow {
  /** @param {any} page  @param {string} id */
  constructor(page, id) {
    this.page = page;
    this.id = id;
    /** @type {TestBuild | null} */
    this.build = null;

    this.cpv = el("span", { class: "tb-cpv" });
    this.asked = el("span", { class: "cell-sub mono" });
    this.state = el("span", { class: "pill" });
    this.user = el("span", {});
    this.notify = el("span", { class: "cell-sub" });
    this.drone = el("td", {});
    this.when = el("span", {});
    this.took = el("span", { class: "cell-sub" });
    this.result = el("span", { class: "tb-result" });
    this.files = el("span", { class: "tb-files" });
    this.logButton = el(
      "button",
      { class: "btn btn-small", type: "button", "data-verb": "log", "aria-pressed": "false" },
      "Log",
    );
    this.logButton.addEventListener("click", () => page.showLog(this.id, this.logButton));
    this.cancelButton = el(
      "button",
      { class: "btn btn-small btn-danger", type: "button", "data-verb": "cancel" },
      "Cancel",
    );
    this.cancelButton.addEventListener("click", () => page.cancel(this.id, this.cancelButton));
    this.tr = el(
      "tr",
      { "data-build": id },
      el("td", {}, this.cpv, this.asked),
      el("td", {}, this.state),
      el("td", {}, this.user, this.notify),
      this.drone,
      el("td", { class: "muted" }, this.when, this.took),
      el("td", { class: "tb-result-cell" }, this.result, this.files),
      el("td", { class: "actions" }, el("span", { class: "action-row" }, this.logButton, this.cancelButton)),
    );
  }

  /** @param {TestBuild} b  @param {number} now */
  update(b, now) {
    this.build = b;
    this.tr.dataset.state = b.state;
    setText(this.cpv, b.cpv || b.package);
    setText(this.asked, b.use.length ? `${b.id} · USE ${b.use.join(" ")}` : b.id);
    this.cpv.title = `asked for ${b.package}`;
    setText(this.state, b.state);
    this.state.className = `pill tb-${b.state}`;
    setText(this.user, b.user);
    const channels = [b.notify_email, b.webhook_url ? "webhook" : ""].filter(Boolean);
    const told = b.notified ? ` (${b.notified})` : "";
    setText(this.notify, channels.length ? `notify ${channels.join(" + ")}${told}` : "");
    this.notify.title = b.webhook_url || "";
    setText(this.drone, b.drone || "–");
    const { text, sub, at } = timesOf(b, now);
    setText(this.when, text);
    setText(this.took, sub);
    this.when.title = at ? stamp(at) : "";
    setText(this.result, resultOf(b));
    this.result.title = b.reason || "";
    const key = b.packages.join(" ");
    if (this.files.dataset.key !== key) {
      this.files.dataset.key = key;
      this.files.replaceChildren(
        ...b.packages.map((url) =>
          el("a", { href: url, class: "mono", title: `${url} (a test build: untested, never released)` }, fileName(url)),
        ),
      );
    }
    const busy = this.page.busy.has(this.id);
    // A build cancelled before it started has no log.
    this.logButton.hidden = b.state !== "queued" && !b.started_at;
    this.cancelButton.hidden = !ACTIVE.has(b.state);
    this.cancelButton.disabled = busy;
    this.cancelButton.setAttribute("aria-label", `Cancel the test build of ${b.cpv || b.package}`);
    this.logButton.setAttribute("aria-label", `Log of the test build of ${b.cpv || b.package}`);
  }
}

/** One token's row; built once, updated by each poll. */
class TokenRow {
  /** @param {any} page  @param {string} id */
  constructor(page, id) {
    this.page = page;
    this.id = id;
    /** @type {Token | null} */
    this.token = null;
    this.user = el("span", { class: "tb-user" });
    this.state = el("span", { class: "pill" });
    this.limits = el("td", {});
    this.queued = el("td", { class: "num" });
    this.created = el("td", {});
    this.used = el("td", { class: "muted" });
    this.revokeButton = el("button", { class: "btn btn-small btn-danger", type: "button", "data-verb": "revoke" }, "Revoke");
    this.revokeButton.addEventListener("click", () => page.revoke(this.id, this.revokeButton));
    this.tr = el(
      "tr",
      { "data-token": id },
      el("td", {}, this.user, el("span", { class: "cell-sub mono" }, id)),
      el("td", {}, this.state),
      this.limits,
      this.queued,
      this.created,
      this.used,
      el("td", { class: "actions" }, this.revokeButton),
    );
  }

  /** @param {Token} t  @param {number} now */
  update(t, now) {
    this.token = t;
    const revoked = Boolean(t.revoked_at);
    this.tr.dataset.state = revoked ? "revoked" : "active";
    setText(this.user, t.user);
    setText(this.state, revoked ? "revoked" : "active");
    this.state.className = `pill tb-token-${revoked ? "revoked" : "active"}`;
    this.state.title = revoked ? `revoked ${stamp(t.revoked_at)}` : "";
    setText(this.limits, `${t.rate} · burst ${t.burst} · at most ${t.max_queued} queued`);
    setText(this.queued, String(t.queued));
    setText(this.created, `${ago(t.created_at, now)} by ${who(t.created_by)}`);
    this.created.title = stamp(t.created_at);
    setText(this.used, t.last_used_at ? ago(t.last_used_at, now) : "never");
    this.used.title = t.last_used_at ? stamp(t.last_used_at) : "";
    this.revokeButton.hidden = revoked;
    this.revokeButton.disabled = this.page.busy.has(this.id);
    this.revokeButton.setAttribute("aria-label", `Revoke ${t.user}'s token ${t.id}`);
  }
}

function table(label, columns, body) {
  return el(
    "table",
    { class: "table table-tb", "aria-labelledby": label },
    el("thead", {}, el("tr", {}, ...columns.map(([title, cls]) => el("th", { scope: "col", class: cls || null }, title)))),
    body,
  );
}

const BUILD_COLUMNS = [["Package"], ["State"], ["User"], ["Drone"], ["When"], ["Result"], [el("span", { class: "visually-hidden" }, "Actions")]];

/** A field of the token form: its label and hint (the input's description) over the input. */
function field(id, label, input, hint) {
  input.id = id;
  input.setAttribute("aria-describedby", `${id}-hint`);
  return el(
    "div",
    { class: "field" },
    el("label", { for: id }, label),
    el("span", { class: "cell-sub tb-hint", id: `${id}-hint` }, hint),
    input,
  );
}

/** Put text on the clipboard; false when the browser refuses (then the admin copies it by hand). */
async function copyText(text, input) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Not a secure context (plain HTTP to a LAN address): the old way, from the selected input.
    input.select();
    return document.execCommand("copy");
  }
}

export function create() {
  const toasts = new Toaster();
  const dialog = new ConfirmDialog();
  const problem = el("div", { class: "banner banner-error", role: "alert", hidden: true });
  const summary = el("p", { class: "page-sub" }, "Loading…");
  const live = el("span", { class: "live", "aria-live": "polite" });

  // Where the focus goes when the button that had it goes away (tabindex -1: focusable, not a tab stop).
  const queueTitle = el("h2", { class: "section-title", id: "tb-queue-title", tabindex: "-1" }, "Queue");
  const tokensTitle = el("h2", { class: "section-title", id: "tb-tokens-title", tabindex: "-1" }, "Tokens");

  // -- tokens --
  const userInput = el("input", { class: "input", type: "text", required: true, maxlength: "64", autocomplete: "off", spellcheck: "false", placeholder: "alice" });
  const rateInput = el("input", { class: "input", type: "text", required: true, maxlength: "16", value: "5/h", autocomplete: "off", spellcheck: "false" });
  const burstInput = el("input", { class: "input", type: "number", min: "1", max: "1000", value: "2", required: true });
  const maxInput = el("input", { class: "input", type: "number", min: "1", max: "1000", value: "3", required: true });
  const inputs = { user: userInput, rate: rateInput, burst: burstInput, max_queued: maxInput };
  const createButton = el("button", { class: "btn btn-primary", type: "submit" }, "Create token");
  const tokenError = el("p", { class: "form-error", id: "token-error", role: "alert", hidden: true });
  const tokenForm = el(
    "form",
    { class: "tb-token-form panel", "aria-label": "Create a test-build token" },
    field("token-user", "User", userInput, "whose builds these are"),
    field("token-rate", "Rate", rateInput, "a count per s, m, h or d: 5/h"),
    field("token-burst", "Burst", burstInput, "at once, above the rate"),
    field("token-max-queued", "Max queued", maxInput, "of this token at a time"),
    createButton,
    tokenError,
  );

  const secretInput = el("input", { class: "input mono tb-secret-value", id: "token-secret", type: "text", readonly: true, "aria-label": "The new token's secret", spellcheck: "false" });
  const copyButton = el("button", { class: "btn", type: "button" }, "Copy");
  const secretDone = el("button", { class: "btn btn-quiet", type: "button" }, "Done");
  const secretTitle = el("strong", { id: "token-secret-title" });
  const secretPanel = el(
    "section",
    { class: "tb-secret", "aria-labelledby": "token-secret-title", hidden: true },
    secretTitle,
    el("p", { class: "muted" }, "Copy the secret now: it is not shown again (the controller keeps only its hash). It goes in ",
      el("code", {}, "Authorization: Bearer …"), " on ", el("code", {}, "POST /api/v1/test-build"), " of the public tier."),
    el("div", { class: "tb-secret-row" }, secretInput, copyButton, secretDone),
  );

  const tokenBody = el("tbody");
  const tokenTable = table(
    "tb-tokens-title",
    [["User"], ["State"], ["Limits"], ["Queued", "num"], ["Created"], ["Last used"], [el("span", { class: "visually-hidden" }, "Actions")]],
    tokenBody,
  );
  const tokensEmpty = el("div", { class: "empty", hidden: true }, el("strong", {}, "No token yet."), el("span", {}, "Create one above for each user who may ask for test builds."));

  // -- the queue and the history --
  const queueBody = el("tbody");
  const queueTable = table("tb-queue-title", BUILD_COLUMNS, queueBody);
  const queueEmpty = el("div", { class: "empty", hidden: true }, el("strong", {}, "Nothing queued or running."), el("span", {}, "Test builds run on an idle drone when no regular job is ready."));
  const historyBody = el("tbody");
  const historyTable = table("tb-history-title", BUILD_COLUMNS, historyBody);
  const historyEmpty = el("div", { class: "empty", hidden: true }, el("strong", {}, "No test build has ended yet."));

  // -- one build's log --
  const logTitle = el("h2", { class: "section-title", id: "tb-log-title" }, "Log");
  const logState = el("span", { class: "muted tb-log-state", "aria-live": "polite" });
  const logText = el("pre", { class: "tb-log-text", tabindex: "0", "aria-labelledby": "tb-log-title" });
  const closeLog = el("button", { class: "btn btn-small btn-quiet", type: "button" }, "Close");
  const logPanel = el(
    "section",
    { class: "tb-log", "aria-labelledby": "tb-log-title", hidden: true },
    el("div", { class: "tb-log-head" }, logTitle, logState, closeLog),
    logText,
  );

  const section = el(
    "section",
    { class: "page testbuilds-page", "aria-labelledby": "testbuilds-title" },
    el("header", { class: "page-head" }, el("div", {}, el("h1", { id: "testbuilds-title" }, "Test builds"), summary), live),
    problem,
    queueTitle,
    el("div", { class: "panel" }, queueTable, queueEmpty),
    logPanel,
    el("h2", { class: "section-title", id: "tb-history-title" }, "History"),
    el("div", { class: "panel" }, historyTable, historyEmpty),
    tokensTitle,
    tokenForm,
    secretPanel,
    el("div", { class: "panel" }, tokenTable, tokensEmpty),
    dialog.el,
    toasts.el,
  );

  /** @type {Map<string, BuildRow>} */
  const rows = new Map();
  /** @type {Map<string, TokenRow>} */
  const tokenRows = new Map();
  /** @type {TestBuild[]} */
  let builds = [];
  /** @type {Token[]} */
  let tokens = [];
  let active = false;

  // The log shown: which build, and the follow under way (aborted when another is shown or the page hides).
  const log = {
    /** @type {string | null} */
    id: null,
    /** @type {AbortController | null} */
    abort: null,
    /** @type {HTMLElement | null} */
    opener: null,
    seq: 0,
  };

  const page = {
    busy: new Set(),
    cancel,
    revoke,
    showLog,
  };

  // -- verbs --

  /**
   * Run a change with its row's buttons off; a refusal shows the controller's
   * reason. The list is read again at once; if that hid the button that had
   * the focus (a revoked token's Revoke, a cancelled build's Cancel), the
   * focus goes to `fallback` instead of being lost.
   */
  async function act(id, verb, what, work, fallback) {
    page.busy.add(id);
    render();
    try {
      await work();
    } catch (error) {
      toasts.show("error", `${verb} refused: ${what}`, error.message, { "data-action": verb.toLowerCase(), "data-id": id });
    } finally {
      page.busy.delete(id);
      await refresh();
    }
    const focused = document.activeElement;
    const lost = focused === document.body || (focused instanceof HTMLElement && section.contains(focused) && focused.offsetParent === null);
    if (lost) fallback().focus();
  }

  /** Read the lists now (after a change), then go on polling; a failure shows as a poll's would. */
  async function refresh() {
    try {
      await load();
    } catch {
      // The poll shows why, and tries again.
    }
    poller.now();
  }

  async function cancel(id, button) {
    const b = rows.get(id)?.build;
    if (!b) return;
    const name = b.cpv || b.package;
    const yes = await dialog.ask({
      title: `Cancel the test build of ${name}?`,
      text:
        b.state === "running"
          ? `${b.user}'s build is stopped on ${b.drone || "its drone"}; what it built so far is not kept.`
          : `${b.user}'s build leaves the queue without running.`,
      confirm: "Cancel build",
      returnTo: button,
    });
    if (!yes) return;
    // Afterwards: its Log button (in the history if it ended), else the queue's title.
    const fallback = () => {
      const row = rows.get(id);
      return row && row.tr.isConnected && !row.logButton.hidden ? row.logButton : queueTitle;
    };
    await act(id, "Cancel", name, async () => {
      const after = await post(buildPath(id, "cancel"));
      toasts.show(
        "ok",
        after?.state === "cancelled" ? `Cancelled ${name}` : `Cancelling ${name}`,
        after?.state === "cancelled" ? "" : "its drone is told to stop",
        { "data-action": "cancel", "data-id": id },
      );
    }, fallback);
  }

  async function revoke(id, button) {
    const t = tokenRows.get(id)?.token;
    if (!t) return;
    const yes = await dialog.ask({
      title: `Revoke ${t.user}'s token?`,
      text:
        `Requests with token ${t.id} are refused (401) from now on; its builds already queued stay queued. ` +
        "It stays listed as revoked; this cannot be undone.",
      confirm: "Revoke",
      returnTo: button,
    });
    if (!yes) return;
    await act(id, "Revoke", `${t.user}'s token`, async () => {
      await del(tokenPath(id));
      toasts.show("ok", `Revoked ${t.user}'s token`, t.id, { "data-action": "revoke", "data-id": id });
    }, () => tokensTitle);
  }

  function markInvalid(name) {
    for (const [key, input] of Object.entries(inputs)) {
      if (key === name) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    }
  }

  tokenForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    tokenError.hidden = true;
    markInvalid(null);
    const body = {
      user: userInput.value.trim(),
      rate: rateInput.value.trim(),
      burst: Number(burstInput.value),
      max_queued: Number(maxInput.value),
    };
    createButton.disabled = true;
    try {
      /** @type {NewToken} */
      const made = await post("/admin/api/test-build-tokens", body);
      showSecret(made.user, made.id, made.secret);
      userInput.value = "";
      toasts.show("ok", `Token created for ${made.user}`, made.id, { "data-action": "create", "data-id": made.id });
    } catch (error) {
      const name = tokenFieldOf(error.message);
      markInvalid(name);
      tokenError.textContent = `Not created: ${error.message}`;
      tokenError.dataset.status = String(error.status);
      tokenError.hidden = false;
      (name ? inputs[name] : userInput).focus();
    } finally {
      createButton.disabled = false;
      refresh();
    }
  });

  function showSecret(user, id, secret) {
    secretPanel.hidden = false;
    secretPanel.dataset.token = id;
    setText(secretTitle, `The secret of ${user}'s new token (${id})`);
    secretInput.value = secret;
    secretInput.focus();
    secretInput.select();
  }

  function hideSecret() {
    secretInput.value = "";
    secretPanel.hidden = true;
    delete secretPanel.dataset.token;
  }

  copyButton.addEventListener("click", async () => {
    const copied = await copyText(secretInput.value, secretInput);
    if (copied) toasts.show("ok", "Secret copied", "paste it where the user gets it; it is not shown again", { "data-action": "copy" });
    else toasts.show("error", "Could not copy", "the browser refused: select the secret and copy it by hand", { "data-action": "copy" });
  });
  secretDone.addEventListener("click", () => {
    hideSecret();
    userInput.focus();
  });

  // -- the log --

  /** Show a build's log (again: hide it); a queued build's once it starts. */
  function showLog(id, opener = null) {
    if (log.id === id) {
      hideLog();
      return;
    }
    stopFollowing();
    log.id = id;
    log.opener = opener;
    for (const [rid, row] of rows) row.logButton.setAttribute("aria-pressed", String(rid === id));
    const b = rows.get(id)?.build;
    logPanel.hidden = false;
    logPanel.dataset.build = id;
    setText(logTitle, `Log of ${b ? b.cpv || b.package : id}`);
    logText.textContent = "";
    if (b?.state === "queued") {
      // Nothing to read yet: render() starts following when a poll sees it run.
      logPanel.dataset.state = "waiting";
      setText(logState, "queued: the log follows once the build starts");
      return;
    }
    loadLog(id, b?.state === "running");
  }

  async function loadLog(id, follow) {
    const seq = ++log.seq;
    const abort = new AbortController();
    log.abort = abort;
    logPanel.dataset.state = follow ? "following" : "loading";
    setText(logState, follow ? "following…" : "loading…");
    try {
      await readLog(id, follow, abort.signal, seq);
    } catch (error) {
      if (seq !== log.seq || abort.signal.aborted) return;
      // Without the log (gone with retention, or not kept): the tail the record holds.
      const tail = rows.get(id)?.build?.log_tail ?? "";
      logText.textContent = tail;
      logPanel.dataset.state = "error";
      setText(logState, `the log could not be read (${error.message})${tail ? "; its last lines:" : ""}`);
      return;
    }
    if (seq !== log.seq) return;
    log.abort = null;
    logPanel.dataset.state = "ended";
    const now = rows.get(id)?.build;
    const exit = now?.exit_code === null || now?.exit_code === undefined ? "" : ` · exit ${now.exit_code}`;
    setText(logState, follow ? `the build ended${exit}` : `${now?.state ?? "ended"}${exit}`);
  }

  /** The log as text, appended as it streams in; the head goes once it is long. */
  async function readLog(id, follow, signal, seq) {
    const response = await fetch(buildPath(id, "log") + (follow ? "?follow=1" : ""), {
      headers: { Accept: "text/plain" },
      credentials: "same-origin",
      cache: "no-store",
      signal,
    });
    if (!response.ok) {
      const data = await response.json().catch(() => null);
      throw new Error(data?.error?.message ?? `the controller answered ${response.status}`);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (seq !== log.seq) {
        reader.cancel().catch(() => {});
        return;
      }
      const text = done ? decoder.decode() : decoder.decode(value, { stream: true });
      if (text) append(text);
      if (done) return;
    }
  }

  function append(text) {
    const atEnd = logText.scrollTop + logText.clientHeight >= logText.scrollHeight - 8;
    let all = logText.textContent + text;
    if (all.length > LOG_KEPT) {
      const cut = all.indexOf("\n", all.length - LOG_KEPT);
      all = `[earlier lines left out]\n${all.slice(cut < 0 ? all.length - LOG_KEPT : cut + 1)}`;
    }
    logText.textContent = all;
    if (atEnd) logText.scrollTop = logText.scrollHeight;
  }

  function stopFollowing() {
    log.seq += 1;
    log.abort?.abort();
    log.abort = null;
  }

  /** focus: back to the Log button that opened it (not when the page hides). */
  function hideLog(focus = true) {
    stopFollowing();
    const opener = log.opener;
    log.id = null;
    log.opener = null;
    logPanel.hidden = true;
    delete logPanel.dataset.build;
    for (const row of rows.values()) row.logButton.setAttribute("aria-pressed", "false");
    if (focus && opener?.isConnected) opener.focus();
  }

  closeLog.addEventListener("click", () => hideLog());

  // -- rendering --

  /** Put the rows of `list` into `body` in order, creating missing ones. */
  function place(body, list, now) {
    /** @type {Element | null} */
    let previous = null;
    for (const b of list) {
      let row = rows.get(b.id);
      if (!row) {
        row = new BuildRow(page, b.id);
        rows.set(b.id, row);
      }
      row.update(b, now);
      row.logButton.setAttribute("aria-pressed", String(log.id === b.id));
      const want = previous ? previous.nextSibling : body.firstChild;
      if (want !== row.tr) body.insertBefore(row.tr, want);
      previous = row.tr;
    }
    // Whatever follows belongs in the other table now, or is gone.
    let extra = previous ? previous.nextSibling : body.firstChild;
    while (extra) {
      const next = extra.nextSibling;
      extra.remove();
      extra = next;
    }
  }

  function render() {
    const now = Date.now();
    // The queue oldest first (the order they run in), the history newest first (by when each ended).
    const queue = builds.filter((b) => ACTIVE.has(b.state)).sort((a, b) => Date.parse(a.queued_at) - Date.parse(b.queued_at));
    const ended = builds
      .filter((b) => !ACTIVE.has(b.state))
      .sort((a, b) => Date.parse(b.finished_at ?? b.queued_at) - Date.parse(a.finished_at ?? a.queued_at));
    const seen = new Set(builds.map((b) => b.id));
    for (const id of rows.keys()) if (!seen.has(id)) rows.delete(id);
    place(queueBody, queue, now);
    place(historyBody, ended, now);
    queueTable.hidden = queue.length === 0;
    queueEmpty.hidden = queue.length > 0;
    historyTable.hidden = ended.length === 0;
    historyEmpty.hidden = ended.length > 0;
    const shown = log.id ? rows.get(log.id)?.build : null;
    if (shown && logPanel.dataset.state === "waiting" && shown.state !== "queued") loadLog(shown.id, shown.state === "running");

    const seenTokens = new Set();
    /** @type {Element | null} */
    let previous = null;
    for (const t of tokens) {
      seenTokens.add(t.id);
      let row = tokenRows.get(t.id);
      if (!row) {
        row = new TokenRow(page, t.id);
        tokenRows.set(t.id, row);
      }
      row.update(t, now);
      const want = previous ? previous.nextSibling : tokenBody.firstChild;
      if (want !== row.tr) tokenBody.insertBefore(row.tr, want);
      previous = row.tr;
    }
    for (const [id, row] of tokenRows) {
      if (!seenTokens.has(id)) {
        row.tr.remove();
        tokenRows.delete(id);
      }
    }
    tokenTable.hidden = tokens.length === 0;
    tokensEmpty.hidden = tokens.length > 0;

    const running = queue.filter((b) => b.state === "running").length;
    const activeTokens = tokens.filter((t) => !t.revoked_at).length;
    summary.textContent = [
      `${queue.length - running} queued`,
      `${running} running`,
      `${ended.length} in the history`,
      plural(activeTokens, "active token"),
    ].join(" · ");
    summary.dataset.queued = String(queue.length - running);
    summary.dataset.running = String(running);
  }

  async function load() {
    const path = "/admin/api/test-builds";
    const [queued, running, recent, tokenList] = await Promise.all([
      get(`${path}?state=queued&limit=${QUEUE_LISTED}`),
      get(`${path}?state=running&limit=${QUEUE_LISTED}`),
      get(`${path}?limit=${HISTORY_LISTED}`),
      get("/admin/api/test-build-tokens"),
    ]);
    // One entry per build; one that moved on between the answers is taken at its furthest state
    // (a build's state only moves forward).
    /** @type {Map<string, TestBuild>} */
    const byId = new Map();
    for (const b of [...queued.builds, ...running.builds, ...recent.builds]) {
      const seen = byId.get(b.id);
      if (!seen || STEP[b.state] >= STEP[seen.state]) byId.set(b.id, b);
    }
    builds = [...byId.values()];
    tokens = tokenList.tokens;
    render();
  }

  const poller = pagePoller(load, { every: POLL_MS, what: "the test builds", live, problem });

  return {
    el: section,
    show() {
      if (!active) {
        active = true;
        poller.start();
      }
    },
    hide() {
      active = false;
      poller.stop();
      hideLog(false);
      // A secret is shown once: not again when the admin comes back to the page.
      hideSecret();
      dialog.close();
    },
  };
}
