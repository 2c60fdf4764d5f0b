// Releases: dated, signed snapshots of staging. The list with the current
// and previous release marked, one release's manifest, the diff between two,
// and the admin's verbs: cut (notes, force), promote, rollback, delete.
//
// The list is polled every POLL_MS while shown (a cut by the schedule or
// swarm-cli shows up by itself); rows are kept by version and updated in
// place so a poll never takes the focus away. A release never changes once
// cut, so a manifest or a diff is asked for once and kept (a few of them).
// Every change asks first, in a dialog that names what will change; a
// refusal (409 with the controller's reason) is shown as it was given.

import { del, get, post } from "../api.js";
import { ConfirmDialog, Toaster, ago, pagePoller, bytes, duration, el, setText } from "../ui.js";

/**
 * @typedef {object} ReleaseSummary
 * @property {string} version
 * @property {string | number} created_at
 * @property {string} notes
 * @property {number} package_count
 * @property {number} total_size
 * @property {boolean} current
 * @property {boolean} previous
 * @property {string | number | null} promoted_at
 * @property {string[]} sessions
 */
/**
 * @typedef {object} ReleasePackage
 * @property {string} cpv
 * @property {string} slot
 * @property {string} path
 * @property {string} build_id
 * @property {string} drone
 * @property {string} sha256
 * @property {number} size
 * @property {string} use
 */
/**
 * @typedef {ReleaseSummary & {
 *   profile: string,
 *   repository: { name: string, revision: string, snapshot_time: string | number | null },
 *   kernel: string,
 *   signing_key: string,
 *   packages: ReleasePackage[],
 * }} ReleaseDetail
 */
/**
 * @typedef {object} ReleaseDiff
 * @property {string} older
 * @property {string} newer
 * @property {ReleasePackage[]} added
 * @property {ReleasePackage[]} removed
 * @property {{ before: ReleasePackage, after: ReleasePackage }[]} changed
 */
/** @typedef {{ version: string, action: string, at: string, by: string }} Promotion */
/**
 * @typedef {object} ReleaseSchedule
 * @property {string} schedule
 * @property {string | null} next_cut_at
 * @property {string | null} waiting_since
 * @property {number | null} auto_promote_after
 * @property {{ version: string, cut_at: string, promote_at: string } | null} pending
 */
/**
 * @typedef {{ current: string | null, previous: string | null, releases: ReleaseSummary[], promotions?: Promotion[], schedule?: ReleaseSchedule | null, next_version?: string | null }} ReleaseList
 */

const POLL_MS = 5000;
const NOTES_MAX = 4000;
const PACKAGES_SHOWN = 500;
const KEPT = 6; // manifests and diffs kept (releases are immutable)
const HISTORY_SHOWN = 8;
const ACTIONS = { promote: "promoted", rollback: "rolled back to", "auto-promote": "auto-promoted" };

const path = (version, action = "") =>
  `/admin/api/releases/${encodeURIComponent(version)}${action ? `/${action}` : ""}`;

/** An instant of the API (ISO text, or seconds since the epoch) as ISO text. */
function iso(t) {
  if (t === null || t === undefined || t === "") return null;
  return typeof t === "number" ? new Date(t * 1000).toISOString() : t;
}

/** "2026-12-05 03:00" in the browser's time zone. */
function stamp(t) {
  const at = iso(t);
  if (!at) return "–";
  const d = new Date(at);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

const plural = (n, word, many = `${word}s`) => `${n} ${n === 1 ? word : many}`;

/** "admin:alice" -> "alice"; "schedule" stays. */
function who(by) {
  return by ? by.replace(/^admin:/, "") : "someone";
}

function firstLine(text) {
  return (text || "").split("\n", 1)[0];
}

/** A Map that keeps the newest few entries. */
class Kept {
  constructor(size) {
    this.size = size;
    this.map = new Map();
  }

  get(key) {
    return this.map.get(key);
  }

  set(key, value) {
    this.map.delete(key);
    this.map.set(key, value);
    while (this.map.size > this.size) this.map.delete(this.map.keys().next().value);
  }

  delete(key) {
    this.map.delete(key);
  }
}

/** One release's row; built once, updated by each poll. */
class ReleaseRow {
  /** @param {any} page  @param {string} version */
  constructor(page, version) {
    this.page = page;
    this.version = version;
    /** @type {ReleaseSummary | null} */
    this.release = null;

    this.pick = el(
      "button",
      { class: "release-pick", type: "button", "aria-pressed": "false", title: `Show the manifest of ${version}` },
      version,
    );
    this.pick.addEventListener("click", () => page.select(this.version));
    this.standing = el("span", { class: "pill", hidden: true });
    this.created = el("span", {});
    this.promoted = el("span", { class: "cell-sub" });
    this.count = el("td", { class: "num" });
    this.size = el("td", { class: "num" });
    this.notes = el("td", { class: "release-notes" });
    this.promoteButton = el("button", { class: "btn btn-small", type: "button", "data-verb": "promote" }, "Promote");
    this.promoteButton.addEventListener("click", () => page.promote(this.version, this.promoteButton));
    this.rollbackButton = el(
      "button",
      { class: "btn btn-small btn-danger", type: "button", "data-verb": "rollback", hidden: true },
      "Roll back",
    );
    this.rollbackButton.addEventListener("click", () => page.rollback(this.version, this.rollbackButton));
    this.deleteButton = el("button", { class: "btn btn-small btn-danger", type: "button", "data-verb": "delete" }, "Delete");
    this.deleteButton.addEventListener("click", () => page.remove(this.version, this.deleteButton));

    this.tr = el(
      "tr",
      { "data-release": version },
      el("td", {}, el("span", { class: "release-name" }, this.pick, this.standing)),
      el("td", {}, this.created, this.promoted),
      this.count,
      this.size,
      this.notes,
      el(
        "td",
        { class: "actions" },
        el("span", { class: "action-row" }, this.promoteButton, this.rollbackButton, this.deleteButton),
      ),
    );
  }

  /** @param {ReleaseSummary} r  @param {ReleaseList} list */
  update(r, list) {
    this.release = r;
    const standing = r.current ? "current" : r.previous ? "previous" : "";
    this.tr.dataset.standing = standing;
    this.standing.hidden = !standing;
    setText(this.standing, standing);
    this.standing.className = `pill release-${standing || "none"}`;
    setText(this.created, stamp(r.created_at));
    this.created.title = `cut ${ago(iso(r.created_at))}`;
    setText(this.promoted, r.promoted_at ? `promoted ${ago(iso(r.promoted_at))}` : "never promoted");
    this.promoted.title = r.promoted_at ? `last promoted ${stamp(r.promoted_at)}` : "";
    setText(this.count, String(r.package_count));
    setText(this.size, bytes(r.total_size));
    setText(this.notes, firstLine(r.notes));
    this.notes.title = r.notes || "";

    const busy = this.page.busy.has(this.version);
    this.promoteButton.disabled = busy || r.current;
    this.promoteButton.title = r.current
      ? `${this.version} is what clients get already`
      : `Make ${this.version} the release clients get (/binhost/current/)`;
    this.rollbackButton.hidden = !r.current;
    // The controller goes back to the previous release; without one it would refuse.
    this.rollbackButton.disabled = busy || !list.previous;
    this.rollbackButton.title = list.previous
      ? `Put ${list.previous} back as the current release`
      : `No release was promoted before ${this.version}: nothing to roll back to`;
    this.deleteButton.disabled = busy || standing !== "";
    this.deleteButton.title = standing
      ? `The ${standing} release is never deleted`
      : `Delete ${this.version} (its directory; staging keeps its packages)`;
  }

  setSelected(on) {
    this.pick.setAttribute("aria-pressed", String(on));
    this.tr.classList.toggle("release-selected", on);
  }
}

function packageTable(label, packages, columns) {
  return el(
    "table",
    { class: "table table-packages", "aria-label": label },
    el("thead", {}, el("tr", {}, ...columns.map(([title, cls]) => el("th", { scope: "col", class: cls || null }, title)))),
    el("tbody", {}, ...packages),
  );
}

/** @param {ReleasePackage} p */
function packageRow(p) {
  return el(
    "tr",
    { "data-cpv": p.cpv },
    el("td", { class: "mono" }, p.cpv),
    el("td", {}, p.slot),
    el("td", { class: "num" }, bytes(p.size)),
    el("td", {}, p.drone || el("span", { class: "muted" }, "unknown")),
    el("td", { class: "mono" }, p.build_id || el("span", { class: "muted" }, "–")),
    el("td", { class: "release-use", title: p.use }, p.use),
  );
}

const PACKAGE_COLUMNS = [["Package"], ["Slot"], ["Size", "num"], ["Drone"], ["Build"], ["USE"]];

export function create(ctx) {
  const toasts = new Toaster();
  const dialog = new ConfirmDialog();
  const problem = el("div", { class: "banner banner-error", role: "alert", hidden: true });
  const summary = el("p", { class: "page-sub" }, "Loading…");
  const scheduleLine = el("p", { class: "page-sub", id: "release-schedule", hidden: true });
  const live = el("span", { class: "live", "aria-live": "polite" });

  // -- cut form --
  const notes = el("textarea", {
    id: "release-notes",
    class: "input",
    rows: "2",
    maxlength: String(NOTES_MAX),
    placeholder: "What changed, why this release",
    spellcheck: "true",
  });
  const force = el("input", { id: "release-force", type: "checkbox" });
  const cutButton = el("button", { class: "btn btn-primary", type: "submit" }, "Cut release…");
  const cutError = el("p", { class: "form-error", id: "cut-error", role: "alert", hidden: true });
  const cutForm = el(
    "form",
    { class: "release-cut panel", "aria-label": "Cut a release" },
    el("label", { class: "field field-grow", for: "release-notes" }, el("span", {}, "Notes"), notes),
    el(
      "label",
      { class: "check", for: "release-force" },
      force,
      el("span", {}, "Force", el("span", { class: "cell-sub" }, "even if nothing changed since the newest release")),
    ),
    cutButton,
    cutError,
  );

  // -- the list --
  const body = el("tbody");
  const table = el(
    "table",
    { class: "table table-releases", "aria-labelledby": "releases-list-title" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        el("th", { scope: "col" }, "Version"),
        el("th", { scope: "col" }, "Cut"),
        el("th", { scope: "col", class: "num" }, "Packages"),
        el("th", { scope: "col", class: "num" }, "Size"),
        el("th", { scope: "col" }, "Notes"),
        el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, "Actions")),
      ),
    ),
    body,
  );
  const empty = el(
    "div",
    { class: "empty", hidden: true },
    el("strong", {}, "No release yet."),
    el("span", {}, "Cut one from staging above: it is signed and listed here, and clients get it once promoted."),
  );

  // -- who promoted and rolled back what --
  const history = el("ol", { class: "release-history", "aria-label": "Promotions and rollbacks, newest first" });

  // -- one release's manifest --
  const manifestTitle = el("h2", { class: "section-title", id: "manifest-title" }, "Manifest");
  const facts = el("dl", { class: "release-facts" });
  const packageFilter = el("input", {
    id: "manifest-filter",
    class: "input",
    type: "search",
    placeholder: "Filter by package, drone or build",
    "aria-label": "Filter the manifest's packages",
    autocomplete: "off",
  });
  const packagesNote = el("span", { class: "muted release-count", "aria-live": "polite" });
  const packagesBox = el("div", { class: "panel" });
  const closeManifest = el("button", { class: "btn btn-small btn-quiet", type: "button" }, "Close");
  const manifestPanel = el(
    "section",
    { class: "release-manifest", "aria-labelledby": "manifest-title", hidden: true },
    el("div", { class: "release-head" }, manifestTitle, packageFilter, packagesNote, closeManifest),
    facts,
    packagesBox,
  );

  // -- the diff --
  const diffFrom = el("select", { id: "diff-from", "aria-label": "Older release" });
  const diffTo = el("select", { id: "diff-to", "aria-label": "Newer release" });
  const diffButton = el("button", { class: "btn", type: "submit" }, "Compare");
  const diffResult = el("div", { class: "release-diff", id: "release-diff", "aria-live": "polite" });
  const diffForm = el(
    "form",
    { class: "diff-form", "aria-label": "Compare two releases" },
    el("label", { class: "field", for: "diff-from" }, el("span", {}, "From"), diffFrom),
    el("span", { class: "diff-arrow", "aria-hidden": "true" }, "→"),
    el("label", { class: "field", for: "diff-to" }, el("span", {}, "To"), diffTo),
    diffButton,
  );
  const diffPanel = el(
    "section",
    { class: "release-compare", "aria-labelledby": "diff-title", hidden: true },
    el("h2", { class: "section-title", id: "diff-title" }, "Compare"),
    diffForm,
    diffResult,
  );

  const section = el(
    "section",
    { class: "page releases-page", "aria-labelledby": "releases-title" },
    el(
      "header",
      { class: "page-head" },
      el("div", {}, el("h1", { id: "releases-title" }, "Releases"), summary, scheduleLine),
      live,
    ),
    problem,
    cutForm,
    el("h2", { class: "section-title", id: "releases-list-title" }, "Releases"),
    el("div", { class: "panel" }, table, empty),
    history,
    manifestPanel,
    diffPanel,
    dialog.el,
    toasts.el,
  );

  /** @type {Map<string, ReleaseRow>} */
  const rows = new Map();
  const manifests = new Kept(KEPT);
  const diffs = new Kept(KEPT);
  /** @type {ReleaseList} */
  let list = { current: null, previous: null, releases: [] };
  /** @type {string | null} */
  let selected = null;
  let active = false;
  let typing = null;
  let manifestSeq = 0;
  let diffSeq = 0;

  const page = {
    busy: new Set(),
    async select(version) {
      await showManifest(selected === version ? null : version);
      // Below a long list the manifest would open out of sight.
      if (selected === version) manifestPanel.scrollIntoView({ block: "nearest" });
    },
    promote,
    rollback,
    remove,
  };

  // -- the verbs --

  /** Run a change with the release's buttons off; a refusal is shown with its reason. */
  async function act(version, verb, work) {
    page.busy.add(version);
    render();
    try {
      await work();
    } catch (error) {
      toasts.show("error", `${verb} ${version} refused`, error.message, { "data-action": verb, "data-release": version });
    } finally {
      page.busy.delete(version);
      refresh();
    }
  }

  async function promote(version, button) {
    const was = list.current;
    const yes = await dialog.ask({
      title: `Promote ${version}?`,
      text: was
        ? `Clients get ${version} from /binhost/current/ at once. ${was}, current now, becomes the previous release.`
        : `Clients get ${version} from /binhost/current/ at once. No release is current now.`,
      confirm: "Promote",
      returnTo: button,
    });
    if (!yes) return;
    await act(version, "promote", async () => {
      await post(path(version, "promote"));
      toasts.show("ok", `${version} is current`, was ? `${was} is the previous release` : "", {
        "data-action": "promote",
        "data-release": version,
      });
    });
  }

  async function rollback(version, button) {
    const back = list.previous;
    if (!back) return; // the button is off: nothing to go back to
    const yes = await dialog.ask({
      title: `Roll back ${version}?`,
      text: `${back} becomes the current release again and clients get it from /binhost/current/. ${version} stays listed.`,
      confirm: "Roll back",
      returnTo: button,
    });
    if (!yes) return;
    await act(version, "rollback", async () => {
      const answer = await post(path(version, "rollback"));
      toasts.show("ok", `Rolled back to ${answer?.version ?? back}`, `${version} is no longer current`, {
        "data-action": "rollback",
        "data-release": version,
      });
    });
  }

  async function remove(version, button) {
    const r = list.releases.find((x) => x.version === version);
    const yes = await dialog.ask({
      title: `Delete ${version}?`,
      text:
        `${version} and its index are removed${r ? ` (${plural(r.package_count, "package")}, ${bytes(r.total_size)})` : ""}; ` +
        "staging and the other releases keep their packages. This cannot be undone.",
      confirm: "Delete",
      returnTo: button,
    });
    if (!yes) return;
    await act(version, "delete", async () => {
      await del(path(version));
      manifests.delete(version);
      if (selected === version) showManifest(null);
      toasts.show("ok", `${version} deleted`, "", { "data-action": "delete", "data-release": version });
    });
  }

  cutForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = notes.value.trim();
    const forced = force.checked;
    const newest = list.releases[0]?.version;
    const yes = await dialog.ask({
      title: "Cut a release from staging?",
      text:
        `Staging's packages are signed and snapshotted into a new release${list.next_version ? `, ${list.next_version}` : ""}. ` +
        (list.current ? `It is not promoted: clients keep ${list.current} until you promote it.` : "It is not promoted yet.") +
        (forced && newest ? ` Forced: cut even if nothing changed since ${newest}.` : ""),
      confirm: "Cut",
      returnTo: cutButton,
    });
    if (!yes) return;
    cutButton.disabled = true;
    setText(cutButton, "Cutting…");
    cutError.hidden = true;
    try {
      const answer = await post("/admin/api/releases", { notes: text, force: forced });
      notes.value = "";
      force.checked = false;
      toasts.show("ok", `${answer.version} cut`, plural(answer.package_count, "package"), {
        "data-action": "cut",
        "data-release": answer.version,
      });
      refresh();
    } catch (error) {
      cutError.textContent = `Not cut: ${error.message}`;
      cutError.hidden = false;
      cutError.dataset.status = String(error.status ?? "");
      toasts.show("error", "Cut refused", error.message, { "data-action": "cut" });
    } finally {
      cutButton.disabled = false;
      setText(cutButton, "Cut release…");
    }
  });
  notes.addEventListener("input", () => {
    cutError.hidden = true;
  });
  force.addEventListener("change", () => {
    cutError.hidden = true;
  });

  // -- the manifest --

  async function showManifest(version) {
    selected = version;
    for (const [v, row] of rows) row.setSelected(v === version);
    const seq = ++manifestSeq;
    if (!version) {
      manifestPanel.hidden = true;
      return;
    }
    manifestPanel.hidden = false;
    manifestPanel.dataset.release = version;
    manifestPanel.dataset.state = "loading";
    setText(manifestTitle, `Manifest of ${version}`);
    let detail = manifests.get(version);
    if (!detail) {
      try {
        detail = await get(path(version));
      } catch (error) {
        if (seq !== manifestSeq) return;
        manifestPanel.dataset.state = "error";
        facts.replaceChildren();
        packagesBox.replaceChildren(el("p", { class: "job-why job-why-error" }, `Could not load ${version}: ${error.message}`));
        return;
      }
      manifests.set(version, detail);
    }
    if (seq !== manifestSeq) return;
    renderManifest(detail);
  }

  /** @param {ReleaseDetail} m */
  function renderManifest(m) {
    const fact = (term, ...value) => [el("dt", {}, term), el("dd", {}, ...value)];
    const repo = m.repository;
    const repoText = [repo?.name, repo?.revision ? repo.revision.slice(0, 12) : "", repo?.snapshot_time ? `snapshot ${stamp(repo.snapshot_time)}` : ""]
      .filter(Boolean)
      .join(" · ");
    facts.replaceChildren(
      ...fact("Cut", `${stamp(m.created_at)} (${ago(iso(m.created_at))})`),
      ...fact("Packages", `${m.package_count} · ${bytes(m.total_size)}`),
      ...fact("Profile", el("span", { class: "mono" }, m.profile || "–")),
      ...fact("Repository", el("span", { class: "mono" }, repoText || "–")),
      ...fact("Kernel", el("span", { class: "mono" }, m.kernel || "none")),
      ...fact("Signed by", el("span", { class: "mono release-key" }, m.signing_key || "unsigned")),
      ...fact("Sessions", el("span", { class: "mono" }, m.sessions?.length ? m.sessions.join(" ") : "–")),
      ...fact("Notes", el("span", { class: "release-notes-full" }, m.notes || "–")),
    );
    renderPackages(m);
    manifestPanel.dataset.state = "ready";
  }

  /** @param {ReleaseDetail} m */
  function renderPackages(m) {
    const needle = packageFilter.value.trim().toLowerCase();
    const matching = needle
      ? m.packages.filter((p) => `${p.cpv} ${p.drone} ${p.build_id}`.toLowerCase().includes(needle))
      : m.packages;
    const shown = matching.slice(0, PACKAGES_SHOWN);
    packagesBox.replaceChildren(
      shown.length
        ? packageTable(`Packages of ${m.version}`, shown.map(packageRow), PACKAGE_COLUMNS)
        : el("div", { class: "empty" }, el("strong", {}, m.packages.length ? "No package matches." : "This release has no package.")),
    );
    setText(
      packagesNote,
      matching.length > shown.length
        ? `first ${shown.length} of ${matching.length} · narrow with the filter`
        : `${plural(matching.length, "package")}${needle ? ` of ${m.packages.length}` : ""}`,
    );
  }

  packageFilter.addEventListener("input", () => {
    window.clearTimeout(typing);
    typing = window.setTimeout(() => {
      const m = selected ? manifests.get(selected) : null;
      if (m) renderPackages(m);
    }, 150);
  });
  closeManifest.addEventListener("click", () => {
    const row = selected ? rows.get(selected) : null;
    showManifest(null);
    row?.pick.focus();
  });

  // -- the diff --

  /** The versions to pick from; what the admin picked stays while it is listed, else the default. */
  function fillSelect(select, versions, fallback) {
    const keep = select.dataset.picked;
    const key = versions.join(" ");
    if (select.dataset.key !== key) {
      select.dataset.key = key;
      select.replaceChildren(...versions.map((v) => el("option", { value: v }, v)));
    }
    const want = keep && versions.includes(keep) ? keep : (fallback ?? versions[0] ?? "");
    if (select.value !== want) select.value = want;
  }
  for (const select of [diffFrom, diffTo]) {
    select.addEventListener("change", () => {
      select.dataset.picked = select.value;
    });
  }

  async function compare(older, newer) {
    const seq = ++diffSeq;
    const key = `${older} ${newer}`;
    diffResult.dataset.state = "loading";
    let diff = diffs.get(key);
    if (!diff) {
      try {
        diff = await get(`${path(older)}/diff/${encodeURIComponent(newer)}`);
      } catch (error) {
        if (seq !== diffSeq) return;
        diffResult.dataset.state = "error";
        diffResult.replaceChildren(el("p", { class: "job-why job-why-error" }, `Could not compare: ${error.message}`));
        return;
      }
      diffs.set(key, diff);
    }
    if (seq !== diffSeq) return;
    renderDiff(diff);
  }

  /** @param {ReleaseDiff} d */
  function renderDiff(d) {
    const counts = el(
      "p",
      { class: "diff-counts" },
      el("span", { class: "diff-added" }, `${d.added.length} added`),
      el("span", { class: "diff-removed" }, `${d.removed.length} removed`),
      el("span", { class: "diff-changed" }, `${d.changed.length} changed`),
      el("span", { class: "muted" }, `from ${d.older} to ${d.newer}`),
    );
    const parts = [counts];
    if (d.added.length) {
      parts.push(
        el("h3", { class: "diff-title" }, "Added"),
        el(
          "div",
          { class: "panel" },
          packageTable(`Added in ${d.newer}`, d.added.map(packageRow), PACKAGE_COLUMNS),
        ),
      );
    }
    if (d.removed.length) {
      parts.push(
        el("h3", { class: "diff-title" }, "Removed"),
        el(
          "div",
          { class: "panel" },
          packageTable(`Removed in ${d.newer}`, d.removed.map(packageRow), PACKAGE_COLUMNS),
        ),
      );
    }
    if (d.changed.length) {
      const changedRows = d.changed.map(({ before, after }) =>
        el(
          "tr",
          { "data-cpv": after.cpv },
          el("td", { class: "mono" }, before.cpv),
          el("td", { class: "mono" }, before.cpv === after.cpv ? el("span", { class: "muted" }, "rebuilt") : after.cpv),
          el("td", { class: "num" }, `${bytes(before.size)} → ${bytes(after.size)}`),
          el("td", {}, after.drone || "–"),
          el("td", { class: "mono" }, after.build_id || "–"),
        ),
      );
      parts.push(
        el("h3", { class: "diff-title" }, "Changed"),
        el(
          "div",
          { class: "panel" },
          packageTable(`Changed in ${d.newer}`, changedRows, [["Before"], ["After"], ["Size", "num"], ["Drone"], ["Build"]]),
        ),
      );
    }
    if (!d.added.length && !d.removed.length && !d.changed.length) {
      parts.push(el("div", { class: "empty" }, el("strong", {}, "The same packages."), el("span", {}, `${d.newer} holds what ${d.older} holds.`)));
    }
    diffResult.replaceChildren(...parts);
    diffResult.dataset.older = d.older;
    diffResult.dataset.newer = d.newer;
    diffResult.dataset.state = "ready";
  }

  diffForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (diffFrom.value && diffTo.value) compare(diffFrom.value, diffTo.value);
  });

  // -- rendering --

  function render() {
    const seen = new Set();
    /** @type {HTMLElement | null} */
    let previous = null;
    for (const r of list.releases) {
      seen.add(r.version);
      let row = rows.get(r.version);
      if (!row) {
        row = new ReleaseRow(page, r.version);
        rows.set(r.version, row);
      }
      row.update(r, list);
      row.setSelected(r.version === selected);
      const want = previous ? previous.nextSibling : body.firstChild;
      if (want !== row.tr) body.insertBefore(row.tr, want);
      previous = row.tr;
    }
    for (const [version, row] of rows) {
      if (!seen.has(version)) {
        row.tr.remove();
        rows.delete(version);
      }
    }
    if (selected && !seen.has(selected)) showManifest(null);
    const any = list.releases.length > 0;
    empty.hidden = any;
    table.hidden = !any;
    const figures = [plural(list.releases.length, "release")];
    figures.push(list.current ? `current ${list.current}` : "none current");
    if (list.previous) figures.push(`previous ${list.previous}`);
    summary.textContent = figures.join(" · ");
    summary.dataset.current = list.current ?? "";

    renderSchedule(list.schedule ?? null);
    renderHistory(list.promotions ?? []);

    // Compare: newest first in both lists; by default what a promote of the newest would change.
    const versions = list.releases.map((r) => r.version);
    diffPanel.hidden = versions.length < 2;
    const newest = versions[0];
    const base = list.current && list.current !== newest ? list.current : versions[1];
    fillSelect(diffFrom, versions, base);
    fillSelect(diffTo, versions, newest);
  }

  /** @param {ReleaseSchedule | null} schedule */
  function renderSchedule(schedule) {
    scheduleLine.hidden = !schedule;
    if (!schedule) return;
    /** @param {string | null} iso */
    const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
    const parts = [`Schedule ${schedule.schedule}`];
    if (schedule.waiting_since) {
      parts.push(`a cut is due since ${when(schedule.waiting_since)}: it waits for the running session`);
    } else {
      parts.push(`next cut ${when(schedule.next_cut_at)}`);
    }
    if (schedule.auto_promote_after !== null) {
      parts.push(`auto-promote after ${duration(schedule.auto_promote_after)}`);
    }
    const pending = schedule.pending;
    if (pending) {
      parts.push(
        `${pending.version} is promoted ${when(pending.promote_at)} ` +
          "unless an admin promotes, rolls back or deletes it first",
      );
    }
    setText(scheduleLine, parts.join(" · "));
  }

  /** @param {Promotion[]} promotions newest first */
  function renderHistory(promotions) {
    const shown = promotions.slice(0, HISTORY_SHOWN);
    const key = shown.map((p) => `${p.at} ${p.action} ${p.version}`).join(",");
    if (history.dataset.key === key) return;
    history.dataset.key = key;
    history.hidden = shown.length === 0;
    history.replaceChildren(
      ...shown.map((p) =>
        el(
          "li",
          { "data-action": p.action, "data-release": p.version },
          el("time", { datetime: p.at, title: new Date(p.at).toLocaleString() }, stamp(p.at)),
          el("span", {}, `${who(p.by)} ${ACTIONS[p.action] ?? p.action} `, el("strong", { class: "mono" }, p.version)),
        ),
      ),
    );
  }

  const poller = pagePoller(
    async () => {
      list = await get("/admin/api/releases");
      render();
    },
    { every: POLL_MS, what: "the releases", live, problem },
  );

  function refresh() {
    poller.now();
  }

  return {
    el: section,
    /** #/releases?release=V shows V's manifest; ?from=A&to=B compares A with B. */
    show(params = {}) {
      if (!active) {
        active = true;
        poller.start();
      }
      if (params.release || params.from) ctx.settle("releases");
      if (params.release) showManifest(params.release);
      if (params.from && params.to) {
        diffFrom.dataset.picked = diffFrom.value = params.from;
        diffTo.dataset.picked = diffTo.value = params.to;
        compare(params.from, params.to);
      }
    },
    hide() {
      active = false;
      poller.stop();
      window.clearTimeout(typing);
      dialog.close();
    },
  };
}
