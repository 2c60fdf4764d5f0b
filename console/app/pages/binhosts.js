// Binhosts: where promoted releases are published (controller/binhosts.py).
// The controller's own binhost and the mirrors it pushes releases to over
// SSH + rsync, each with its state (healthy, syncing, stale, unreachable...),
// the release it holds against the current one, when it was last synced and
// checked, the networks it serves, its priority and public URL; a push under
// way shows its progress (files, bytes). The admin's verbs: sync one mirror or
// all of them, add or edit a target (PUT, the controller's reason shown on the
// field it names), delete a mirror.
//
// Live: the binhost_* events of /ws/events (and a promote or rollback, which
// changes the current release) ask for the list again, at most every
// REFRESH_MS (a push reports progress often); the list is polled every
// POLL_MS besides (a health check that changed nothing, a lost stream). Rows are kept by name and updated in place, so a poll never
// takes the focus away.

import { del, get, liveSocket, post, put } from "../api.js";
import { Throttle } from "/common/live.js";
import { ActionMenu, ConfirmDialog, Toaster, ago, bytes, el, pagePoller, setText } from "../ui.js";

/**
 * @typedef {object} PushProgress
 * @property {string} release
 * @property {string | null} started_at
 * @property {number} files_total
 * @property {number} files_done
 * @property {number} bytes_sent
 */
/**
 * @typedef {"unknown" | "healthy" | "syncing" | "stale" | "unreachable" | "disabled"} BinhostStatus
 */
/**
 * @typedef {object} Binhost
 * @property {string} name
 * @property {"local" | "rsync"} kind
 * @property {string} url
 * @property {boolean} [url_set] false: the local target's URL is the controller's default
 * @property {string} destination
 * @property {string[]} networks
 * @property {number} priority
 * @property {boolean} enabled
 * @property {string | null} updated_at
 * @property {string} updated_by
 * @property {BinhostStatus} status
 * @property {string | null} release
 * @property {string[]} releases
 * @property {string | null} synced_at
 * @property {string | null} checked_at
 * @property {string} error
 * @property {number} bytes_sent
 * @property {number} files_sent
 * @property {PushProgress | null} progress
 */
/** @typedef {{ current: string | null, binhosts: Binhost[] }} BinhostList */
/**
 * What the add/edit dialog sends (PUT /admin/api/binhosts/{name}).
 * @typedef {{ kind: string, url: string, destination: string, networks: string[], priority: number | string, enabled: boolean }} TargetBody
 */

const POLL_MS = 5000;
const REFRESH_MS = 500; // binhost events ask for the list at most this often
const EVENT_TYPES = [
  "binhost_sync_started",
  "binhost_sync_progress",
  "binhost_synced",
  "binhost_sync_failed",
  "binhost_stale",
  "binhost_unreachable",
  "binhost_healthy",
  "binhost_saved",
  "binhost_deleted",
  // The current release changes: which mirrors are behind, whether a sync may start.
  "release_promoted",
  "release_rolled_back",
];
// The fields of the dialog, in the order a reason of the controller is matched against.
const FIELDS = ["name", "kind", "destination", "url", "networks", "priority", "enabled"];
const STATUS_TEXT = {
  unknown: "not checked since the controller started",
  healthy: "serves the current release; its checks pass",
  syncing: "a push is running (it serves what it held meanwhile)",
  stale: "holds an older release than the current one",
  unreachable: "its last health check could not reach it",
  disabled: "never pushed to, never handed to a client",
};

const path = (name, action = "") => `/admin/api/binhosts/${encodeURIComponent(name)}${action ? `/${action}` : ""}`;

/** "2026-12-05 03:00" in the browser's time zone. */
function stamp(at) {
  if (!at) return "–";
  const d = new Date(at);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

const plural = (n, word, many = `${word}s`) => `${n} ${n === 1 ? word : many}`;

/** "user@host:/srv/binhost" -> "host:/srv/binhost" (where, for a dialog's sentence). */
function where(b) {
  return b.destination ? b.destination.replace(/^[^@]*@/, "") : b.url;
}

/**
 * A push's progress in words and as a fraction (null: the total is not known yet).
 * @param {PushProgress} p
 * @returns {{ text: string, fraction: number | null }}
 */
export function progressOf(p) {
  const known = p.files_total > 0;
  const done = Math.min(p.files_done, known ? p.files_total : p.files_done);
  // rsync has not listed what it sends yet.
  if (!known && done === 0 && p.bytes_sent === 0) return { text: `${p.release}: starting…`, fraction: null };
  const files = known ? `${done} of ${plural(p.files_total, "file")}` : plural(done, "file");
  return {
    text: `${p.release}: ${files} · ${bytes(p.bytes_sent)} sent`,
    fraction: known ? done / p.files_total : null,
  };
}

/**
 * How a target's release stands against the current one.
 * @param {Binhost} b  @param {string | null} current
 * @returns {"current" | "behind" | "none" | "unknown"}
 */
export function standingOf(b, current) {
  if (!b.release) return "none";
  if (!current) return "unknown";
  return b.release === current ? "current" : "behind";
}

/**
 * The networks a target serves, in words ("none" is a fallback for everyone).
 * @param {string[]} networks
 */
export function networksText(networks) {
  return networks.length ? networks.join(", ") : "every network (fallback)";
}

/**
 * The dialog's field a reason of the controller is about ("destination: ..."),
 * or null when it names none.
 * @param {string} message
 */
export function fieldOf(message) {
  const text = message.toLowerCase();
  const at = text.match(/^([a-z]+)\b/);
  if (at && FIELDS.includes(at[1])) return at[1];
  if (at && at[1] === "network") return "networks";
  for (const field of FIELDS) {
    if (new RegExp(`\\b${field}\\b`).test(text)) return field;
  }
  return text.includes("network") ? "networks" : null;
}

/** One target's row; built once, updated by each poll. */
class BinhostRow {
  /** @param {any} page  @param {string} name */
  constructor(page, name) {
    this.page = page;
    this.name = name;
    /** @type {Binhost | null} */
    this.binhost = null;

    this.kind = el("span", { class: "cell-sub" });
    this.status = el("span", { class: "pill" });
    this.error = el("p", { class: "bh-error", role: "note", hidden: true });
    this.bar = el("span", { class: "bh-bar-fill" });
    this.barTrack = el(
      "span",
      { class: "bh-bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-label": `Push to ${name}` },
      this.bar,
    );
    this.progressText = el("span", { class: "bh-progress-text" });
    this.progress = el("div", { class: "bh-progress", hidden: true }, this.barTrack, this.progressText);
    this.release = el("span", { class: "mono bh-release" });
    this.behind = el("span", { class: "cell-sub" });
    this.synced = el("span", {});
    this.checked = el("span", { class: "cell-sub" });
    this.networkList = el("span", {});
    this.priority = el("span", { class: "cell-sub bh-priority" });
    this.networks = el("td", { class: "bh-networks" }, this.networkList, this.priority);
    this.url = el("a", { class: "mono bh-url", target: "_blank", rel: "noopener noreferrer" });
    this.destination = el("span", { class: "cell-sub mono" });

    this.syncButton = el("button", { class: "btn btn-small", type: "button", "data-verb": "sync" }, "Sync now");
    this.syncButton.addEventListener("click", () => page.sync(this.name, this.syncButton));
    this.menu = new ActionMenu("More", `More actions for ${name}`);
    this.editItem = this.menu.add(el("button", { type: "button", class: "menu-item", "data-verb": "edit" }, "Edit…"), () =>
      page.edit(this.name, this.menu.button),
    );
    this.deleteItem = this.menu.add(
      el("button", { type: "button", class: "menu-item menu-danger", "data-verb": "delete" }, "Delete…"),
      () => page.remove(this.name, this.menu.button),
    );

    this.tr = el(
      "tr",
      { "data-binhost": name },
      el("td", {}, el("span", { class: "bh-name" }, name), this.kind),
      el("td", { class: "bh-status" }, this.status, this.progress, this.error),
      el("td", {}, this.release, this.behind),
      el("td", {}, this.synced, this.checked),
      this.networks,
      el("td", { class: "bh-where" }, this.url, this.destination),
      el(
        "td",
        { class: "actions" },
        el("span", { class: "action-row" }, this.syncButton, this.menu.button, this.menu.list),
      ),
    );
  }

  /** @param {Binhost} b  @param {string | null} current */
  update(b, current) {
    this.binhost = b;
    const tr = this.tr;
    tr.dataset.status = b.status;
    tr.dataset.kind = b.kind;
    setText(this.kind, b.kind === "local" ? "local" : `rsync${b.enabled ? "" : " · off"}`);
    this.kind.title = b.kind === "local" ? "the controller's own binhost" : "a mirror the controller pushes to over SSH + rsync";

    setText(this.status, b.status);
    this.status.className = `pill bh-${b.status}`;
    this.status.title = STATUS_TEXT[b.status] ?? "";

    const syncing = b.status === "syncing" && b.progress !== null;
    this.progress.hidden = !syncing;
    if (syncing) {
      const { text, fraction } = progressOf(b.progress);
      setText(this.progressText, text);
      if (fraction === null) {
        this.barTrack.removeAttribute("aria-valuenow");
        this.barTrack.dataset.indeterminate = "true";
        this.bar.style.width = "";
      } else {
        const percent = Math.round(fraction * 100);
        this.barTrack.setAttribute("aria-valuenow", String(percent));
        delete this.barTrack.dataset.indeterminate;
        this.bar.style.width = `${percent}%`;
      }
      this.barTrack.setAttribute("aria-valuetext", text);
    }
    const troubled = Boolean(b.error) && (b.status === "stale" || b.status === "unreachable");
    this.error.hidden = !troubled;
    setText(this.error, troubled ? b.error : "");

    const standing = standingOf(b, current);
    tr.dataset.standing = standing;
    setText(this.release, b.release ?? "none");
    this.release.title = b.releases.length ? `holds ${b.releases.join(", ")}` : "holds no release";
    setText(
      this.behind,
      standing === "behind" ? "behind" : standing === "current" ? "current" : "",
    );
    this.behind.title = standing === "behind" || standing === "none" ? `the current release is ${current}` : "";
    this.behind.className = `cell-sub bh-standing-${standing}`;

    setText(this.synced, b.kind === "local" ? "–" : b.synced_at ? ago(b.synced_at) : "never");
    this.synced.title = b.synced_at
      ? `last synced ${stamp(b.synced_at)}${b.files_sent || b.bytes_sent ? `: ${plural(b.files_sent, "file")}, ${bytes(b.bytes_sent)} sent` : ""}`
      : "";
    setText(this.checked, b.checked_at ? `checked ${ago(b.checked_at)}` : "");
    this.checked.title = b.checked_at ? `last checked ${stamp(b.checked_at)}` : "";

    const key = b.networks.join(" ");
    if (this.networkList.dataset.key !== key || !this.networkList.firstChild) {
      this.networkList.dataset.key = key;
      this.networkList.replaceChildren(
        b.networks.length
          ? el("span", { class: "pills" }, ...b.networks.map((n) => el("span", { class: "bh-net" }, n)))
          : el("span", { class: "muted", title: "No network named: a fallback for every machine" }, "all (fallback)"),
      );
    }
    setText(this.priority, `priority ${b.priority}`);
    this.priority.dataset.priority = String(b.priority);
    setText(this.url, b.url);
    if (this.url.getAttribute("href") !== b.url) this.url.setAttribute("href", b.url);
    this.url.title = b.url;
    setText(this.destination, b.destination);
    this.destination.title = b.destination ? `pushed to ${b.destination}` : "";

    const busy = this.page.busy.has(b.name);
    const mirror = b.kind !== "local";
    this.syncButton.hidden = !mirror;
    this.syncButton.disabled = busy || !mirror || !b.enabled || b.status === "syncing" || !current;
    this.syncButton.title = !b.enabled
      ? `${b.name} is disabled: it is never pushed to`
      : !current
        ? "No release is current: promote one first"
        : b.status === "syncing"
          ? `A push to ${b.name} is running`
          : `Push ${current} to ${b.name} now`;
    this.menu.button.disabled = busy;
    this.editItem.title = `Change ${b.name}'s URL, networks, priority${mirror ? ", destination" : ""}`;
    // The controller refuses to delete its own binhost (409): say so where the item is.
    this.deleteItem.setAttribute("aria-disabled", String(!mirror));
    this.deleteItem.title = mirror ? `Stop publishing to ${b.name}` : "The controller's own binhost is always there";
  }
}

/** The add/edit form in a modal <dialog>; the controller's reason stays on screen until the admin changes something. */
class TargetDialog {
  /** @param {(name: string, body: TargetBody) => Promise<unknown>} save */
  constructor(save) {
    this.save = save;
    this.title = el("h2", { class: "dialog-title", id: "binhost-dialog-title" });
    this.nameInput = el("input", { id: "bh-name", class: "input", name: "name", autocomplete: "off", spellcheck: "false" });
    this.kindText = el("span", { class: "muted", id: "bh-kind" });
    this.destinationInput = el("input", {
      id: "bh-destination",
      class: "input mono",
      name: "destination",
      placeholder: "user@host:/srv/binhost",
      autocomplete: "off",
      spellcheck: "false",
    });
    this.urlInput = el("input", {
      id: "bh-url",
      class: "input mono",
      name: "url",
      placeholder: "https://mirror.example/binhost",
      autocomplete: "off",
      spellcheck: "false",
    });
    this.networksInput = el("input", {
      id: "bh-networks",
      class: "input",
      name: "networks",
      placeholder: "lan, tailscale",
      autocomplete: "off",
      spellcheck: "false",
    });
    this.priorityInput = el("input", { id: "bh-priority", class: "input", name: "priority", inputmode: "numeric" });
    this.enabledInput = el("input", { id: "bh-enabled", type: "checkbox", name: "enabled" });
    this.error = el("p", { class: "form-error", id: "bh-error", role: "alert", hidden: true });
    this.saveButton = el("button", { class: "btn btn-primary", type: "submit", value: "save" }, "Save");
    this.cancelButton = el("button", { class: "btn", type: "button" }, "Cancel");

    const field = (label, input, hint = "") =>
      el("label", { class: "field", for: input.id }, el("span", {}, label, hint ? el("span", { class: "cell-sub" }, hint) : ""), input);
    this.destinationField = field("Destination", this.destinationInput, "rsync over SSH: [user@]host[:port]:/absolute/path");
    this.urlField = field("Public URL", this.urlInput, "what clients fetch from: URL/current/, URL/releases/vX/");
    this.enabledField = el(
      "label",
      { class: "check", for: "bh-enabled" },
      this.enabledInput,
      el("span", {}, "Enabled", el("span", { class: "cell-sub" }, "pushed to, and handed to clients while healthy")),
    );
    this.form = el(
      "form",
      { class: "bh-form", novalidate: true, "aria-labelledby": "binhost-dialog-title" },
      this.title,
      el("div", { class: "bh-form-row" }, field("Name", this.nameInput), el("div", { class: "field" }, el("span", {}, "Kind"), this.kindText)),
      this.destinationField,
      this.urlField,
      el(
        "div",
        { class: "bh-form-row" },
        field("Networks", this.networksInput, "as drones report them; none: a fallback for all"),
        field("Priority", this.priorityInput, "0-999, higher first"),
      ),
      this.enabledField,
      this.error,
      el("div", { class: "dialog-actions" }, this.cancelButton, this.saveButton),
    );
    this.el = el("dialog", { class: "dialog bh-dialog", "aria-labelledby": "binhost-dialog-title" }, this.form);
    /** @type {HTMLElement | null} */
    this.opener = null;
    this.kind = "rsync";
    this.editing = false;

    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.cancelButton.addEventListener("click", () => this.close());
    this.form.addEventListener("input", () => this.clearError());
    this.el.addEventListener("close", () => {
      if (this.opener?.isConnected) this.opener.focus();
      this.opener = null;
    });
  }

  get open() {
    return this.el.open;
  }

  /** @param {Binhost | null} b the target to edit; null adds a mirror  @param {HTMLElement} opener */
  show(b, opener) {
    this.opener = opener;
    this.editing = b !== null;
    this.kind = b?.kind ?? "rsync";
    setText(this.title, b ? `Edit ${b.name}` : "Add a mirror");
    this.nameInput.value = b?.name ?? "";
    this.nameInput.readOnly = this.editing;
    setText(this.kindText, this.kind === "local" ? "local: the controller's own binhost" : "rsync: pushed to over SSH");
    this.destinationInput.value = b?.destination ?? "";
    this.destinationField.hidden = this.kind === "local";
    // The local target's default URL follows the controller's public URL: left empty, it stays so.
    const defaultUrl = b?.kind === "local" && b.url_set === false;
    this.urlInput.value = defaultUrl ? "" : (b?.url ?? "");
    this.urlInput.placeholder = defaultUrl ? `${b.url} (the controller's own)` : "https://mirror.example/binhost";
    this.networksInput.value = b ? b.networks.join(", ") : "";
    this.priorityInput.value = String(b?.priority ?? 0);
    this.enabledInput.checked = b?.enabled ?? true;
    // The controller's own binhost is always on (the controller says so if asked otherwise).
    this.enabledField.hidden = this.kind === "local";
    this.clearError();
    this.saveButton.disabled = false;
    setText(this.saveButton, b ? "Save" : "Add");
    this.el.showModal();
    (this.editing ? this.urlInput : this.nameInput).focus();
  }

  close() {
    if (this.el.open) this.el.close();
  }

  clearError() {
    this.error.hidden = true;
    delete this.error.dataset.status;
    delete this.error.dataset.field;
    for (const input of this.form.querySelectorAll("[aria-invalid]")) {
      input.removeAttribute("aria-invalid");
      input.removeAttribute("aria-describedby");
    }
  }

  /** @returns {TargetBody} */
  body() {
    const priority = this.priorityInput.value.trim();
    return {
      kind: this.kind,
      url: this.urlInput.value.trim(),
      destination: this.kind === "local" ? "" : this.destinationInput.value.trim(),
      networks: this.networksInput.value.split(/[\s,]+/).filter(Boolean),
      // A number when it is one; otherwise as typed, and the controller says why not.
      priority: /^-?\d+$/.test(priority) ? Number(priority) : priority,
      enabled: this.enabledInput.checked,
    };
  }

  async submit() {
    const name = this.nameInput.value.trim();
    this.clearError();
    if (!name) {
      // The name is the address (PUT .../binhosts/NAME): without one there is nothing to ask.
      this.showError("name is required: a lowercase letter, then lowercase letters, digits or '-'", undefined);
      return;
    }
    this.saveButton.disabled = true;
    try {
      await this.save(name, this.body());
      this.close();
    } catch (error) {
      this.showError(error.message, error.status);
    } finally {
      this.saveButton.disabled = false;
    }
  }

  /** @param {string} message  @param {number | undefined} status */
  showError(message, status) {
    setText(this.error, message);
    this.error.hidden = false;
    this.error.dataset.status = String(status ?? "");
    const field = fieldOf(message);
    const input = field ? this.form.querySelector(`[name="${field}"]`) : null;
    if (input instanceof HTMLInputElement && !input.closest("[hidden]")) {
      this.error.dataset.field = field;
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", this.error.id);
      input.focus();
    }
  }
}

export function create() {
  const toasts = new Toaster();
  const dialog = new ConfirmDialog();
  const problem = el("div", { class: "banner banner-error", role: "alert", hidden: true });
  const summary = el("p", { class: "page-sub" }, "Loading…");
  const live = el("span", { class: "live", "aria-live": "polite" });
  const addButton = el("button", { class: "btn", type: "button" }, "Add mirror…");
  const syncAllButton = el("button", { class: "btn btn-primary", type: "button" }, "Sync all…");

  const body = el("tbody");
  const table = el(
    "table",
    { class: "table table-binhosts", "aria-labelledby": "binhosts-title" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        el("th", { scope: "col" }, "Name"),
        el("th", { scope: "col" }, "Status"),
        el("th", { scope: "col" }, "Release"),
        el("th", { scope: "col" }, "Last synced"),
        el("th", { scope: "col" }, "Networks", el("span", { class: "visually-hidden" }, " and priority")),
        el("th", { scope: "col" }, "URL"),
        el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, "Actions")),
      ),
    ),
    body,
  );
  const note = el(
    "p",
    { class: "muted bh-note" },
    "A machine gets the binhosts of its network first and the others after them (",
    el("code", {}, "/api/v1/binrepos.conf?network=NAME"),
    "); a stale or unreachable mirror is left out until it catches up.",
  );
  const editor = new TargetDialog(save);

  const section = el(
    "section",
    { class: "page binhosts-page", "aria-labelledby": "binhosts-title" },
    el(
      "header",
      { class: "page-head" },
      el("div", {}, el("h1", { id: "binhosts-title" }, "Binhosts"), summary),
      el("div", { class: "bh-head-actions" }, live, addButton, syncAllButton),
    ),
    problem,
    el("div", { class: "panel" }, table),
    note,
    dialog.el,
    editor.el,
    toasts.el,
  );

  /** @type {Map<string, BinhostRow>} */
  const rows = new Map();
  /** @type {BinhostList} */
  let list = { current: null, binhosts: [] };
  let active = false;

  const page = {
    busy: new Set(),
    sync: syncOne,
    edit,
    remove,
  };

  const mirrors = () => list.binhosts.filter((b) => b.kind !== "local" && b.enabled);

  /** Run a change with the target's buttons off; a refusal is shown with its reason. */
  async function act(name, verb, work) {
    page.busy.add(name);
    render();
    try {
      await work();
    } catch (error) {
      toasts.show("error", `${verb} ${name} refused`, error.message, { "data-action": verb, "data-binhost": name });
    } finally {
      page.busy.delete(name);
      refresh();
    }
  }

  async function syncOne(name, button) {
    const b = list.binhosts.find((x) => x.name === name);
    const current = list.current;
    if (!b || !current) return;
    const yes = await dialog.ask({
      title: `Push ${current} to ${name}?`,
      text:
        `${current} is copied to ${where(b)} (only what changed since ${b.release ?? "nothing: the first push"}), ` +
        `checked against its manifest, then made current there for clients of ${networksText(b.networks)}.`,
      confirm: "Sync now",
      returnTo: button,
    });
    if (!yes) return;
    await act(name, "sync", async () => {
      const answer = await post(path(name, "sync"));
      toasts.show("ok", `Pushing ${current} to ${name}`, answer?.started?.length ? "" : "a push was running already", {
        "data-action": "sync",
        "data-binhost": name,
      });
    });
  }

  async function syncAll() {
    const current = list.current;
    const targets = mirrors();
    if (!current || !targets.length) return;
    const yes = await dialog.ask({
      title: `Push ${current} to every mirror?`,
      text: `${current} is pushed to ${targets.map((b) => `${b.name} (${where(b)})`).join(", ")}, a few at a time; a mirror that fails is retried and never holds up the others.`,
      confirm: "Sync all",
      returnTo: syncAllButton,
    });
    if (!yes) return;
    syncAllButton.disabled = true;
    try {
      const answer = await post("/admin/api/binhosts/sync");
      const started = answer?.started ?? [];
      toasts.show("ok", `Pushing ${current}`, started.length ? `to ${started.join(", ")}` : "every push was running already", {
        "data-action": "sync-all",
      });
    } catch (error) {
      toasts.show("error", "Sync refused", error.message, { "data-action": "sync-all" });
    } finally {
      refresh();
    }
  }

  /** @param {string} name  @param {HTMLElement} opener */
  function edit(name, opener) {
    const b = list.binhosts.find((x) => x.name === name);
    if (b) editor.show(b, opener);
  }

  /** @param {string} name  @param {TargetBody} target */
  async function save(name, target) {
    const existed = list.binhosts.some((b) => b.name === name);
    await put(path(name), target);
    toasts.show("ok", existed ? `${name} saved` : `${name} added`, "", { "data-action": "save", "data-binhost": name });
    refresh();
  }

  async function remove(name, button) {
    const b = list.binhosts.find((x) => x.name === name);
    if (!b) return;
    const yes = await dialog.ask({
      title: `Delete ${name}?`,
      text:
        `${name} is no longer pushed to and leaves every binrepos.conf answer at once, so clients of ` +
        `${networksText(b.networks)} use the other binhosts. The files at ${where(b)} stay where they are.`,
      confirm: "Delete",
      returnTo: button,
    });
    if (!yes) return;
    await act(name, "delete", async () => {
      await del(path(name));
      toasts.show("ok", `${name} deleted`, "", { "data-action": "delete", "data-binhost": name });
    });
  }

  addButton.addEventListener("click", () => editor.show(null, addButton));
  syncAllButton.addEventListener("click", syncAll);

  function render() {
    const seen = new Set();
    /** @type {HTMLElement | null} */
    let previous = null;
    for (const b of list.binhosts) {
      seen.add(b.name);
      let row = rows.get(b.name);
      if (!row) {
        row = new BinhostRow(page, b.name);
        rows.set(b.name, row);
      }
      row.update(b, list.current);
      const want = previous ? previous.nextSibling : body.firstChild;
      if (want !== row.tr) body.insertBefore(row.tr, want);
      previous = row.tr;
    }
    for (const [name, row] of rows) {
      if (!seen.has(name)) {
        row.tr.remove();
        rows.delete(name);
      }
    }
    const counts = new Map();
    for (const b of list.binhosts) counts.set(b.status, (counts.get(b.status) ?? 0) + 1);
    const figures = [plural(list.binhosts.length, "binhost")];
    figures.push(list.current ? `current ${list.current}` : "no release current");
    for (const status of ["healthy", "syncing", "stale", "unreachable", "unknown", "disabled"]) {
      if (counts.get(status)) figures.push(`${counts.get(status)} ${status}`);
    }
    setText(summary, figures.join(" · "));
    summary.dataset.current = list.current ?? "";

    const targets = mirrors();
    syncAllButton.disabled = !list.current || targets.length === 0;
    syncAllButton.title = !list.current
      ? "No release is current: promote one first"
      : targets.length
        ? `Push ${list.current} to ${targets.map((b) => b.name).join(", ")}`
        : "No enabled mirror: add one";
  }

  const poller = pagePoller(
    async () => {
      list = await get("/admin/api/binhosts");
      render();
    },
    { every: POLL_MS, what: "the binhosts", live, problem },
  );

  function refresh() {
    poller.now();
  }

  /** An event about a binhost: the list again soon, at most every REFRESH_MS (a push reports often). */
  const soon = new Throttle(refresh, REFRESH_MS);
  const poke = () => soon.call();

  const events = liveSocket(() => `/ws/events?type=${EVENT_TYPES.join(",")}`, {
    onMessage: poke,
    onGap: poke,
  });

  return {
    el: section,
    show() {
      if (active) return;
      active = true;
      poller.start();
      events.start();
    },
    hide() {
      active = false;
      poller.stop();
      events.stop();
      soon.cancel();
      dialog.close();
      editor.close();
      for (const row of rows.values()) row.menu.close();
    },
  };
}
