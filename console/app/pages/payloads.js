// Payloads: what the drones run besides their builds (the agent, its
// agent.toml, their /etc/portage), uploaded as numbered versions per kind,
// signed by the controller and applied by the drones themselves.
//
// The page: upload (kind, file, notes); each kind's versions with state,
// size, sha256, uploader and notes; stage; deploy to a drone (a dialog that
// names the version and the drone); drift at a glance, per drone and kind
// the version deployed to it against the one it runs, with how its last
// deploy went and the drone's reason when it refused, failed or rolled back.
//
// The lists are polled every POLL_MS while shown; the payload_* events of
// /ws/events are listed as they come and make the lists asked again soon (at
// most every REFRESH_MS: a deploy reports several steps). Rows are kept by
// key and updated in place, so a poll never takes the focus away.

import { get, liveSocket, post, upload } from "../api.js";
import { Throttle } from "/common/live.js";
import { fleet } from "../fleet.js";
import { ConfirmDialog, Toaster, ago, bytes, el, pagePoller, setText } from "../ui.js";

/**
 * @typedef {object} Payload
 * @property {string} kind
 * @property {number} version
 * @property {string} sha256
 * @property {number} size
 * @property {string} uploaded_by
 * @property {string} uploaded_at
 * @property {string} notes
 * @property {"uploaded" | "staged" | "deployed"} state
 */
/** @typedef {{ payloads: Payload[], public_key: string, key_fingerprint: string }} PayloadList */
/**
 * @typedef {object} DroneVersion
 * @property {string} drone
 * @property {string} drone_id
 * @property {string} kind
 * @property {number} expected
 * @property {number} running
 * @property {boolean} drift
 * @property {string} state
 * @property {string} reason
 * @property {string} deploy_id
 * @property {string | null} updated_at
 */
/** @typedef {{ versions: DroneVersion[], drifting: number }} DroneVersions */
/**
 * @typedef {object} RolloutDrone
 * @property {string} drone
 * @property {string} drone_id
 * @property {number} batch
 * @property {string} state
 * @property {number} previous
 * @property {string} reason
 * @property {string} deploy_id
 */
/**
 * @typedef {object} Rollout
 * @property {string} id
 * @property {string} kind
 * @property {number} version
 * @property {boolean} rollback
 * @property {string} state
 * @property {string} reason
 * @property {{ canary: number, batch: number, pause_s: number, gate_timeout_s: number, auto_rollback: boolean }} strategy
 * @property {{ all: boolean, network: string, drones: string[] }} target
 * @property {number} batches
 * @property {number} next_batch
 * @property {string | null} next_batch_at when the pause before next_batch ends (null: not in a pause)
 * @property {RolloutDrone[]} drones
 * @property {string} started_by
 * @property {string} created_at
 * @property {string} updated_at
 */
/**
 * @typedef {object} PayloadEvent
 * @property {number} id
 * @property {string} ts
 * @property {string} type
 * @property {string} message
 * @property {string | null} drone_id
 * @property {string | null} drone_name
 */

const KINDS = ["agent", "agent-config", "portage-config"];
const ABOUT = {
  agent: "a wheel or sdist of build-swarm (make dist)",
  "agent-config": "an agent.toml the agent starts with",
  "portage-config": "a tar of files under etc/portage",
};
const EVENT_TYPES = [
  "payload_uploaded",
  "payload_staged",
  "payload_deploy_started",
  "payload_applied",
  "payload_refused",
  "payload_failed",
  "payload_rolled_back",
  "rollout_started",
  "rollout_batch",
  "rollout_paused",
  "rollout_resumed",
  "rollout_aborted",
  "rollout_failed",
  "rollout_done",
  "rollout_rolled_back",
];
// How a deploy went, as the drone or the controller said it; the bad ones carry a reason.
const DEPLOY_STATES = {
  "": "reported",
  sent: "sent",
  waiting: "waiting for its build",
  fetching: "fetching",
  applied: "applied",
  refused: "refused",
  failed: "failed",
  rolled_back: "rolled back",
  timed_out: "timed out",
  unsent: "not sent",
};
const BAD = new Set(["refused", "failed", "rolled_back", "timed_out", "unsent"]);
const UNDER_WAY = new Set(["sent", "waiting", "fetching"]);
// A rollout's verbs, each offered in the states the controller takes it in.
const ROLLOUT_VERBS = [
  { verb: "pause", label: "Pause", when: ["running"], asks: false },
  { verb: "resume", label: "Resume", when: ["paused"], asks: false },
  { verb: "abort", label: "Abort", when: ["running", "paused"], asks: true },
  { verb: "rollback", label: "Roll back", when: ["paused", "aborted", "failed", "done"], asks: true },
];
const ROLLOUT_BAD = new Set(["failed", "aborted", "rolled_back", "rolling_back"]);
// A planned drone's state as a pill's tone (pending and skipped: idle).
const DRONE_TONES = { passed: "ok", kept: "ok", sent: "busy", failed: "bad", rolled_back: "bad" };
const ROLLOUTS_SHOWN = 5;
const POLL_MS = 5000;
const REFRESH_MS = 1000;
const NOTES_MAX = 1000; // the API's bound on the notes of the query
const EVENTS_SHOWN = 12;

const versionPath = (kind, version, action = "") =>
  `/admin/api/payloads/${encodeURIComponent(kind)}/${version}${action ? `/${action}` : ""}`;

/** "admin:alice" -> "alice" */
const who = (by) => (by ? by.replace(/^admin:/, "") : "someone");
const firstLine = (text) => (text || "").split("\n", 1)[0];
const plural = (n, word, many = `${word}s`) => `${n} ${n === 1 ? word : many}`;
const shown = (version) => (version ? `v${version}` : "none");

/** One payload version's row; built once, updated by each poll. */
class VersionRow {
  /** @param {any} page  @param {Payload} p */
  constructor(page, p) {
    this.kind = p.kind;
    this.version = p.version;
    const name = `${p.kind} v${p.version}`;
    this.state = el("span", { class: "pill" });
    this.size = el("td", { class: "num" });
    this.sha = el("code", { class: "mono pl-sha" });
    this.by = el("span", {});
    this.at = el("span", { class: "cell-sub" });
    this.notes = el("td", { class: "pl-notes" });
    this.stageButton = el("button", { class: "btn btn-small", type: "button", "data-verb": "stage" }, "Stage");
    this.stageButton.addEventListener("click", () => page.stage(p.kind, p.version, this.stageButton));
    this.deployButton = el("button", { class: "btn btn-small btn-primary", type: "button", "data-verb": "deploy" }, "Deploy…");
    this.deployButton.addEventListener("click", () => page.deploy(p.kind, p.version, this.deployButton));
    this.stageButton.setAttribute("aria-label", `Stage ${name}`);
    this.deployButton.setAttribute("aria-label", `Deploy ${name}`);
    this.tr = el(
      "tr",
      { "data-kind": p.kind, "data-version": String(p.version) },
      el("th", { scope: "row", class: "mono pl-version" }, `v${p.version}`),
      el("td", {}, this.state),
      this.size,
      el("td", {}, this.sha),
      el("td", {}, this.by, this.at),
      this.notes,
      el("td", { class: "actions" }, el("span", { class: "action-row" }, this.stageButton, this.deployButton)),
    );
  }

  /** @param {Payload} p  @param {boolean} busy */
  update(p, busy) {
    this.tr.dataset.state = p.state;
    setText(this.state, p.state);
    this.state.className = `pill pl-${p.state}`;
    setText(this.size, bytes(p.size));
    this.size.title = `${p.size} bytes`;
    setText(this.sha, p.sha256.slice(0, 16));
    this.sha.title = `sha256 ${p.sha256}`;
    setText(this.by, who(p.uploaded_by));
    setText(this.at, ago(p.uploaded_at));
    this.at.title = new Date(p.uploaded_at).toLocaleString();
    setText(this.notes, firstLine(p.notes));
    this.notes.title = p.notes || "";
    this.stageButton.hidden = p.state !== "uploaded";
    this.stageButton.disabled = busy;
    this.deployButton.disabled = busy || p.state === "uploaded";
    this.deployButton.title =
      p.state === "uploaded" ? "Stage it first: only a staged version is deployed" : `Send v${p.version} to a drone`;
  }
}

/** One drone's payload of one kind: expected against running. */
class DriftRow {
  /** @param {DroneVersion} v */
  constructor(v) {
    this.expected = el("td", { class: "num mono" });
    this.running = el("td", { class: "num mono" });
    this.drift = el("span", { class: "pill" });
    this.state = el("span", { class: "pill" });
    this.reason = el("span", { class: "pl-reason" });
    this.updated = el("td", { class: "muted" });
    this.tr = el(
      "tr",
      { "data-drone": v.drone, "data-kind": v.kind },
      el("th", { scope: "row", class: "pl-drone" }, v.drone),
      el("td", { class: "mono" }, v.kind),
      this.expected,
      this.running,
      el("td", {}, this.drift),
      el("td", { class: "pl-last" }, this.state, this.reason),
      this.updated,
    );
  }

  /** @param {DroneVersion} v */
  update(v) {
    this.tr.dataset.drift = String(v.drift);
    this.tr.dataset.state = v.state;
    this.tr.classList.toggle("pl-drifting", v.drift);
    setText(this.expected, shown(v.expected));
    this.expected.title = v.expected ? `v${v.expected} was deployed to ${v.drone}` : "nothing deployed to it yet";
    setText(this.running, v.running ? `v${v.running}` : "installed");
    this.running.title = v.running ? `${v.drone} says it runs v${v.running}` : "what it was installed with";
    setText(this.drift, v.drift ? "drift" : "in step");
    this.drift.className = `pill ${v.drift ? "pl-drift" : "pl-in-step"}`;
    const bad = BAD.has(v.state);
    setText(this.state, DEPLOY_STATES[v.state] ?? v.state);
    this.state.className = `pill pl-deploy-${bad ? "bad" : UNDER_WAY.has(v.state) ? "busy" : "ok"}`;
    this.state.title = v.deploy_id ? `deploy ${v.deploy_id}` : "";
    setText(this.reason, v.reason);
    this.reason.hidden = !v.reason;
    setText(this.updated, v.updated_at ? ago(v.updated_at) : "–");
    this.updated.title = v.updated_at ? new Date(v.updated_at).toLocaleString() : "";
  }
}

/** What a rollout goes to, in words. @param {Rollout} r */
function targetText(r) {
  if (r.target.all) return "every drone";
  if (r.target.network) return `the ${r.target.network} network`;
  return r.target.drones.join(", ");
}

/** One rollout: its plan and progress, and its verbs; built once, updated by each poll. */
class RolloutCard {
  /** @param {any} page  @param {Rollout} r */
  constructor(page, r) {
    this.id = r.id;
    this.title = el("h3", { class: "pl-rollout-title", id: `pl-rollout-${r.id}` });
    this.state = el("span", { class: "pill" });
    this.progress = el("p", { class: "pl-rollout-progress" });
    this.reason = el("p", { class: "pl-reason", role: "status" });
    this.drones = el("ol", { class: "pl-rollout-drones", "aria-label": `The drones of ${r.id}` });
    /** @type {Map<string, HTMLButtonElement>} */
    this.buttons = new Map();
    for (const { verb, label } of ROLLOUT_VERBS) {
      const button = /** @type {HTMLButtonElement} */ (
        el("button", { class: `btn btn-small${verb === "abort" || verb === "rollback" ? " btn-danger" : ""}`, type: "button", "data-verb": verb }, label)
      );
      button.addEventListener("click", () => page.rolloutVerb(this.id, verb, button));
      this.buttons.set(verb, button);
    }
    this.el = el(
      "article",
      { class: "pl-rollout panel", "data-rollout": r.id, "aria-labelledby": `pl-rollout-${r.id}` },
      el("header", { class: "pl-rollout-head" }, this.title, this.state, el("span", { class: "action-row" }, ...this.buttons.values())),
      this.progress,
      this.reason,
      this.drones,
    );
  }

  /** @param {Rollout} r  @param {boolean} busy */
  update(r, busy) {
    this.el.dataset.state = r.state;
    setText(this.title, `${r.kind} v${r.version}${r.rollback ? " (rollback)" : ""} to ${targetText(r)}`);
    setText(this.state, r.state.replace("_", " "));
    this.state.className = `pill pl-deploy-${ROLLOUT_BAD.has(r.state) ? "bad" : r.state === "done" ? "ok" : "busy"}`;
    const s = r.strategy;
    const passed = r.drones.filter((d) => d.state === "passed").length;
    const planned = r.drones.filter((d) => d.batch >= 0).length;
    setText(
      this.progress,
      `${passed} of ${planned} drones passed · batch ${Math.min(r.next_batch + 1, r.batches)} of ${r.batches}` +
        `${r.next_batch_at ? ` starts at ${new Date(r.next_batch_at).toLocaleTimeString()}` : ""} · ` +
        `canary ${s.canary}, batch ${s.batch}, pause ${s.pause_s} s, gate ${s.gate_timeout_s} s` +
        `${s.auto_rollback ? ", rolls back on failure" : ""} · ${r.id} by ${who(r.started_by)} ${ago(r.created_at)}`,
    );
    setText(this.reason, r.reason);
    this.reason.hidden = !r.reason;
    const key = r.drones.map((d) => `${d.drone}:${d.batch}:${d.state}:${d.reason}`).join("|");
    if (this.drones.dataset.key !== key) {
      this.drones.dataset.key = key;
      this.drones.replaceChildren(
        ...r.drones.map((d) =>
          el(
            "li",
            { "data-drone": d.drone, "data-state": d.state },
            el("span", { class: "pl-ev-drone" }, d.drone),
            el("span", { class: "muted" }, d.batch < 0 ? "skipped" : d.batch === 0 && s.canary > 0 ? "canary" : `batch ${d.batch}`),
            el(
              "span",
              { class: `pill pl-deploy-${DRONE_TONES[d.state] ?? "idle"}` },
              d.state.replace("_", " "),
            ),
            el("span", { class: "pl-reason" }, d.reason),
          ),
        ),
      );
    }
    for (const { verb, when } of ROLLOUT_VERBS) {
      const button = this.buttons.get(verb);
      if (!button) continue;
      button.hidden = !when.includes(r.state);
      button.disabled = busy;
    }
  }
}

/** A number field of the strategy: a label, the input, a hint. */
function numberField(id, label, value, min, max, step, hint) {
  const input = el("input", {
    id,
    class: "input",
    type: "number",
    min: String(min),
    max: String(max),
    step: String(step),
    value: String(value),
    required: true,
  });
  const field = el("label", { class: "field", for: id }, el("span", {}, label, el("span", { class: "cell-sub" }, hint)), input);
  return { input, field };
}

/**
 * The deploy dialog: to one drone (a plain deploy) or, when the controller
 * has rollouts, as a rollout (every drone, a network, the drones picked) with
 * its strategy. The controller's refusal stays in it, with its reason.
 */
class DeployDialog {
  constructor() {
    this.title = el("h2", { class: "dialog-title", id: "pl-deploy-title" });
    this.text = el("p", { class: "dialog-text", id: "pl-deploy-text" });
    this.rollouts = false;

    /** @type {Record<string, HTMLInputElement>} */
    this.modes = {};
    const modeLabels = { one: "One drone", all: "Every drone", network: "A network", drones: "Drones I pick" };
    const modeChoices = Object.entries(modeLabels).map(([value, label]) => {
      const input = /** @type {HTMLInputElement} */ (
        el("input", { type: "radio", name: "pl-deploy-mode", id: `pl-mode-${value}`, value })
      );
      input.addEventListener("change", () => this.showMode());
      this.modes[value] = input;
      return el("label", { class: "check", for: `pl-mode-${value}` }, input, el("span", {}, label));
    });
    this.modeSet = el("fieldset", { class: "pl-modes" }, el("legend", {}, "Deploy to"), ...modeChoices);

    this.drone = el("select", { id: "pl-deploy-drone", class: "input" });
    this.droneField = el("label", { class: "field", for: "pl-deploy-drone" }, el("span", {}, "Drone"), this.drone);
    this.network = el("select", { id: "pl-deploy-network", class: "input" });
    this.networkField = el("label", { class: "field", for: "pl-deploy-network" }, el("span", {}, "Network"), this.network);
    this.picks = el("div", { class: "pl-picks", id: "pl-deploy-picks" });
    this.picksSet = el("fieldset", { class: "pl-picks-set" }, el("legend", {}, "Drones"), this.picks);

    this.canary = numberField("pl-canary", "Canaries", 1, 0, 1000, 1, "first, alone");
    this.batch = numberField("pl-batch", "Batch size", 5, 1, 1000, 1, "at a time");
    this.pause = numberField("pl-pause", "Pause (s)", 0, 0, 86400, "any", "between batches");
    this.gate = numberField("pl-gate", "Gate (s)", 600, 1, 86400, "any", "each drone, to pass");
    this.autoRollback = el("input", { id: "pl-auto-rollback", type: "checkbox", checked: true });
    this.strategy = el(
      "fieldset",
      { class: "pl-strategy" },
      el("legend", {}, "Strategy"),
      el("div", { class: "pl-strategy-row" }, this.canary.field, this.batch.field, this.pause.field, this.gate.field),
      el(
        "label",
        { class: "check", for: "pl-auto-rollback" },
        this.autoRollback,
        el("span", {}, "Roll back on failure", el("span", { class: "cell-sub" }, "the drones that took it go back to the version they ran")),
      ),
    );

    this.rollback = el("input", { id: "pl-deploy-rollback", type: "checkbox" });
    this.error = el("p", { class: "form-error", id: "pl-deploy-error", role: "alert", hidden: true });
    this.cancel = el("button", { class: "btn", type: "button" }, "Cancel");
    this.submit = el("button", { class: "btn btn-primary", type: "submit" }, "Deploy");
    this.form = el(
      "form",
      { class: "pl-form" },
      this.title,
      this.text,
      this.modeSet,
      this.droneField,
      this.networkField,
      this.picksSet,
      this.strategy,
      el(
        "label",
        { class: "check", for: "pl-deploy-rollback" },
        this.rollback,
        el("span", {}, "Signed as a rollback", el("span", { class: "cell-sub" }, "the drone may go down to it from a newer version")),
      ),
      this.error,
      el("div", { class: "dialog-actions" }, this.cancel, this.submit),
    );
    this.el = el(
      "dialog",
      { class: "dialog pl-dialog", "aria-labelledby": "pl-deploy-title", "aria-describedby": "pl-deploy-text" },
      this.form,
    );
    this.cancel.addEventListener("click", () => this.close());
    this.el.addEventListener("close", () => {
      const opener = this.opener;
      this.opener = null;
      if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
    });
    /** @type {((body: Record<string, unknown>) => Promise<void>) | null} */
    this.send = null;
    this.opener = null;
    this.form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!this.send) return;
      const body = this.body();
      if (typeof body === "string") {
        this.fail(body);
        return;
      }
      this.submit.disabled = true;
      this.error.hidden = true;
      try {
        await this.send(body);
        this.close();
      } catch (error) {
        this.fail(error instanceof Error ? error.message : String(error));
      } finally {
        this.submit.disabled = false;
      }
    });
  }

  mode() {
    if (!this.rollouts) return "one";
    return Object.entries(this.modes).find(([, input]) => input.checked)?.[0] ?? "one";
  }

  showMode() {
    const mode = this.mode();
    this.modeSet.hidden = !this.rollouts;
    this.droneField.hidden = mode !== "one";
    this.networkField.hidden = mode !== "network";
    this.picksSet.hidden = mode !== "drones";
    this.strategy.hidden = mode === "one";
    setText(this.submit, mode === "one" ? "Deploy" : "Start rollout");
  }

  /** The request's body, or why there is none. */
  body() {
    const mode = this.mode();
    const rollback = this.rollback.checked;
    if (mode === "one") return this.drone.value ? { drones: [this.drone.value], rollback } : "Choose a drone.";
    const strategy = {
      canary: Number(this.canary.input.value),
      batch: Number(this.batch.input.value),
      pause_s: Number(this.pause.input.value),
      gate_timeout_s: Number(this.gate.input.value),
      auto_rollback: this.autoRollback.checked,
      rollback,
    };
    if (mode === "all") return { all: true, ...strategy };
    if (mode === "network") return this.network.value ? { network: this.network.value, ...strategy } : "Choose a network.";
    const picked = [...this.picks.querySelectorAll("input:checked")].map((input) => /** @type {HTMLInputElement} */ (input).value);
    return picked.length ? { drones: picked, ...strategy } : "Pick at least one drone.";
  }

  fail(message) {
    setText(this.error, message);
    this.error.hidden = false;
  }

  /**
   * @param {Payload} p
   * @param {{name: string, connected: boolean, network: string}[]} drones
   * @param {boolean} rollouts whether the controller has rollouts
   * @param {(body: Record<string, unknown>) => Promise<void>} send
   */
  open(p, drones, rollouts, send) {
    this.opener = document.activeElement;
    this.send = send;
    this.rollouts = rollouts;
    setText(this.title, `Deploy ${p.kind} v${p.version}?`);
    setText(
      this.text,
      `Each drone is sent v${p.version}, signed; it takes it when no build runs and reports how it went. ` +
        `sha256 ${p.sha256.slice(0, 16)}…, ${bytes(p.size)}.`,
    );
    const sorted = [...drones].sort((a, b) => Number(b.connected) - Number(a.connected) || a.name.localeCompare(b.name));
    const label = (d) => (d.connected ? d.name : `${d.name} (not connected)`);
    this.drone.replaceChildren(...sorted.map((d) => el("option", { value: d.name }, label(d))));
    const networks = [...new Set(drones.map((d) => d.network).filter(Boolean))].sort();
    this.network.replaceChildren(...networks.map((n) => el("option", { value: n }, n)));
    this.picks.replaceChildren(
      ...sorted.map((d, i) =>
        el(
          "label",
          { class: "check", for: `pl-pick-${i}` },
          el("input", { type: "checkbox", id: `pl-pick-${i}`, value: d.name }),
          el("span", {}, label(d)),
        ),
      ),
    );
    this.modes.one.checked = true;
    this.rollback.checked = false;
    this.error.hidden = true;
    this.submit.disabled = sorted.length === 0;
    this.showMode();
    if (!sorted.length) this.fail("No drone is enrolled.");
    this.el.showModal();
    (rollouts ? this.modes.one : this.drone).focus();
  }

  close() {
    if (this.el.open) this.el.close();
  }
}

export function create() {
  const toasts = new Toaster();
  const confirm = new ConfirmDialog();
  const deployDialog = new DeployDialog();
  const problem = el("div", { class: "banner banner-error", role: "alert", hidden: true });
  const summary = el("p", { class: "page-sub", id: "payloads-summary" }, "Loading…");
  const live = el("span", { class: "live", "aria-live": "polite" });

  // -- upload --
  const kind = el(
    "select",
    { id: "pl-kind", class: "input", required: true },
    ...KINDS.map((k) => el("option", { value: k }, k)),
  );
  const kindHint = el("span", { class: "cell-sub", id: "pl-kind-hint" });
  const file = el("input", { id: "pl-file", class: "input", type: "file", required: true, "aria-describedby": "pl-kind-hint" });
  const notes = el("input", {
    id: "pl-notes",
    class: "input",
    type: "text",
    maxlength: String(NOTES_MAX),
    placeholder: "What it changes, why",
    autocomplete: "off",
  });
  const uploadButton = el("button", { class: "btn btn-primary", type: "submit" }, "Upload");
  const uploadError = el("p", { class: "form-error", id: "pl-upload-error", role: "alert", hidden: true });
  const uploadForm = el(
    "form",
    { class: "pl-upload panel", "aria-label": "Upload a payload" },
    el("label", { class: "field", for: "pl-kind" }, el("span", {}, "Kind"), kind),
    el("label", { class: "field", for: "pl-file" }, el("span", {}, "File", kindHint), file),
    el("label", { class: "field field-grow", for: "pl-notes" }, el("span", {}, "Notes"), notes),
    uploadButton,
    uploadError,
  );
  const hint = () => setText(kindHint, ABOUT[kind.value] ?? "");
  kind.addEventListener("change", hint);
  hint();

  // -- the versions, one table per kind --
  /** @type {Map<string, {body: HTMLElement, table: HTMLElement, empty: HTMLElement, count: HTMLElement}>} */
  const kindTables = new Map();
  const versionSections = KINDS.map((k) => {
    const id = `pl-versions-${k}`;
    const body = el("tbody");
    const count = el("span", { class: "muted pl-count" });
    const table = el(
      "table",
      { class: "table table-payloads", "aria-labelledby": id, "data-kind": k },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          el("th", { scope: "col" }, "Version"),
          el("th", { scope: "col" }, "State"),
          el("th", { scope: "col", class: "num" }, "Size"),
          el("th", { scope: "col" }, "sha256"),
          el("th", { scope: "col" }, "Uploaded by"),
          el("th", { scope: "col" }, "Notes"),
          el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, "Actions")),
        ),
      ),
      body,
    );
    const empty = el("div", { class: "empty" }, el("strong", {}, `No ${k} payload yet.`), el("span", {}, ABOUT[k]));
    kindTables.set(k, { body, table, empty, count });
    return el(
      "section",
      { class: "pl-kind", "aria-labelledby": id },
      el("h3", { class: "pl-kind-title", id }, k, count),
      el("div", { class: "panel" }, table, empty),
    );
  });

  // -- drift --
  const onlyDrift = el("input", { id: "pl-only-drift", type: "checkbox" });
  const driftBody = el("tbody");
  const driftTable = el(
    "table",
    { class: "table table-drift", "aria-labelledby": "pl-drift-title" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        el("th", { scope: "col" }, "Drone"),
        el("th", { scope: "col" }, "Kind"),
        el("th", { scope: "col", class: "num" }, "Expected"),
        el("th", { scope: "col", class: "num" }, "Running"),
        el("th", { scope: "col" }, "Drift"),
        el("th", { scope: "col" }, "Last deploy"),
        el("th", { scope: "col" }, "Updated"),
      ),
    ),
    driftBody,
  );
  const driftEmpty = el(
    "div",
    { class: "empty" },
    el("strong", {}, "No drone reports payloads yet."),
    el("span", {}, "A drone whose agent takes payloads says its versions when it connects."),
  );
  const driftNote = el("span", { class: "muted", id: "pl-drift-note", "aria-live": "polite" });

  // -- rollouts (when the controller has them) --
  const rolloutList = el("div", { class: "pl-rollouts" });
  const rolloutsEmpty = el("p", { class: "muted pl-rollouts-empty" }, "No rollout yet: Deploy… starts one to every drone, a network or the drones picked.");
  const rolloutSection = el(
    "section",
    { class: "pl-rollouts-section", "aria-labelledby": "pl-rollouts-title", hidden: true },
    el("h2", { class: "section-title", id: "pl-rollouts-title" }, "Rollouts"),
    rolloutList,
    rolloutsEmpty,
  );

  // -- events --
  const eventList = el("ol", { class: "pl-events", "aria-label": "Payload events, newest first" });
  const eventsEmpty = el("p", { class: "muted" }, "No payload event yet.");

  const section = el(
    "section",
    { class: "page payloads-page", "aria-labelledby": "payloads-title" },
    el("header", { class: "page-head" }, el("div", {}, el("h1", { id: "payloads-title" }, "Payloads"), summary), live),
    problem,
    uploadForm,
    el(
      "div",
      { class: "pl-head" },
      el("h2", { class: "section-title", id: "pl-drift-title" }, "Drift"),
      driftNote,
      el("label", { class: "check", for: "pl-only-drift" }, onlyDrift, el("span", {}, "Only drifting")),
    ),
    el("div", { class: "panel" }, driftTable, driftEmpty),
    rolloutSection,
    el("h2", { class: "section-title" }, "Versions"),
    ...versionSections,
    el("h2", { class: "section-title", id: "pl-events-title" }, "Events"),
    el("div", { class: "panel pl-events-panel" }, eventList, eventsEmpty),
    confirm.el,
    deployDialog.el,
    toasts.el,
  );

  /** @type {PayloadList} */
  let list = { payloads: [], public_key: "", key_fingerprint: "" };
  /** @type {DroneVersions} */
  let drift = { versions: [], drifting: 0 };
  /** @type {Map<string, VersionRow>} */
  const versionRows = new Map();
  /** @type {Map<string, DriftRow>} */
  const driftRows = new Map();
  /** @type {boolean | null} whether this controller has rollouts (null: not known yet) */
  let hasRollouts = null;
  /** @type {Rollout[] | null} null: this controller has no rollouts */
  let rollouts = null;
  /** @type {Map<string, RolloutCard>} */
  const rolloutCards = new Map();
  /** @type {PayloadEvent[]} */
  let events = [];
  let lastId = 0;
  const busy = new Set();
  let active = false;

  const page = {
    /** Stage: a version may be deployed once staged (asked first: it cannot be undone). */
    async stage(k, version, button) {
      const yes = await confirm.ask({
        title: `Stage ${k} v${version}?`,
        text: `v${version} may then be deployed to drones. A staged version stays staged.`,
        confirm: "Stage",
        returnTo: button,
      });
      if (!yes) return;
      await act(k, version, "stage", async () => {
        await post(versionPath(k, version, "stage"));
        toasts.show("ok", `${k} v${version} staged`, "", { "data-action": "stage", "data-version": String(version) });
      });
    },
    async deploy(k, version, _button) {
      const p = list.payloads.find((x) => x.kind === k && x.version === version);
      if (!p) return;
      let drones = [];
      try {
        drones = await fleet.fetch();
      } catch (error) {
        toasts.show("error", "Could not list the drones", error instanceof Error ? error.message : String(error));
        return;
      }
      deployDialog.open(p, drones, rollouts !== null, async (body) => {
        const started = await post(versionPath(k, version, "deploy"), body);
        if (started.deploy_id) {
          toasts.show(
            "ok",
            `${k} v${version} sent to ${started.drones.join(", ")}`,
            `deploy ${started.deploy_id}${started.rollback ? ", as a rollback" : ""}`,
            { "data-action": "deploy", "data-deploy": started.deploy_id },
          );
        } else {
          toasts.show("ok", `Rollout of ${k} v${version} started`, `${started.id} to ${targetText(started)}`, {
            "data-action": "rollout",
            "data-rollout": started.id,
          });
        }
        refresh();
      });
    },
    /** A rollout's verb; abort and roll back ask first, naming what they do. */
    async rolloutVerb(id, verb, button) {
      const r = rollouts?.find((x) => x.id === id);
      if (!r) return;
      const name = `${r.kind} v${r.version}`;
      if (verb === "abort" || verb === "rollback") {
        const yes = await confirm.ask({
          title: verb === "abort" ? `Abort the rollout of ${name}?` : `Roll back the rollout of ${name}?`,
          text:
            verb === "abort"
              ? "No drone is sent it any more; the drones that took it keep it."
              : "Each drone that took it is deployed the version it ran before, signed as a rollback.",
          confirm: verb === "abort" ? "Abort" : "Roll back",
          returnTo: button,
        });
        if (!yes) return;
      }
      busy.add(id);
      render();
      try {
        await post(`/admin/api/rollouts/${encodeURIComponent(id)}/${verb}`);
      } catch (error) {
        toasts.show("error", `${verb} ${id} refused`, error instanceof Error ? error.message : String(error), {
          "data-action": verb,
          "data-rollout": id,
        });
      } finally {
        busy.delete(id);
        refresh();
      }
    },
  };

  async function act(k, version, verb, work) {
    const key = `${k}/${version}`;
    busy.add(key);
    render();
    try {
      await work();
    } catch (error) {
      toasts.show("error", `${verb} ${k} v${version} refused`, error instanceof Error ? error.message : String(error), {
        "data-action": verb,
      });
    } finally {
      busy.delete(key);
      refresh();
    }
  }

  uploadForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = file.files?.[0];
    uploadError.hidden = true;
    if (!chosen) {
      setText(uploadError, "Choose the payload's file.");
      uploadError.hidden = false;
      file.focus();
      return;
    }
    const query = new URLSearchParams({ kind: kind.value });
    if (notes.value.trim()) query.set("notes", notes.value.trim());
    uploadButton.disabled = true;
    try {
      const p = await upload(`/admin/api/payloads?${query}`, chosen);
      toasts.show("ok", `${p.kind} v${p.version} uploaded`, `${bytes(p.size)}, sha256 ${p.sha256.slice(0, 16)}…`, {
        "data-action": "upload",
        "data-version": String(p.version),
      });
      file.value = "";
      notes.value = "";
      refresh();
    } catch (error) {
      setText(uploadError, `Not uploaded: ${error instanceof Error ? error.message : String(error)}`);
      uploadError.hidden = false;
    } finally {
      uploadButton.disabled = false;
    }
  });

  onlyDrift.addEventListener("change", () => renderDrift());

  // -- rendering --

  function render() {
    for (const k of KINDS) {
      const parts = kindTables.get(k);
      if (!parts) continue;
      const mine = list.payloads.filter((p) => p.kind === k);
      const seen = new Set();
      /** @type {Element | null} */
      let previous = null;
      for (const p of mine) {
        const key = `${k}/${p.version}`;
        seen.add(key);
        let row = versionRows.get(key);
        if (!row) {
          row = new VersionRow(page, p);
          versionRows.set(key, row);
        }
        row.update(p, busy.has(key));
        const want = previous ? previous.nextSibling : parts.body.firstChild;
        if (want !== row.tr) parts.body.insertBefore(row.tr, want);
        previous = row.tr;
      }
      for (const [key, row] of versionRows) {
        if (key.startsWith(`${k}/`) && !seen.has(key)) {
          row.tr.remove();
          versionRows.delete(key);
        }
      }
      parts.table.hidden = mine.length === 0;
      parts.empty.hidden = mine.length > 0;
      const latest = mine.find((p) => p.state !== "uploaded");
      setText(parts.count, mine.length ? `${plural(mine.length, "version")}${latest ? ` · v${latest.version} ${latest.state}` : ""}` : "");
    }
    const drones = new Set(drift.versions.map((v) => v.drone_id)).size;
    const figures = [plural(list.payloads.length, "version"), plural(drones, "drone"), `${drift.drifting} drifting`];
    if (list.key_fingerprint) figures.push(`signed by ${list.key_fingerprint}`);
    setText(summary, figures.join(" · "));
    summary.dataset.drifting = String(drift.drifting);
    renderDrift();
    renderRollouts();
  }

  function renderRollouts() {
    rolloutSection.hidden = rollouts === null;
    if (rollouts === null) return;
    // Every rollout under way, then the newest of the others.
    const open = rollouts.filter((r) => r.state === "running" || r.state === "paused" || r.state === "rolling_back");
    const rest = rollouts.filter((r) => !open.includes(r)).slice(0, Math.max(0, ROLLOUTS_SHOWN - open.length));
    const wanted = [...open, ...rest];
    const seen = new Set();
    /** @type {Element | null} */
    let previous = null;
    for (const r of wanted) {
      seen.add(r.id);
      let card = rolloutCards.get(r.id);
      if (!card) {
        card = new RolloutCard(page, r);
        rolloutCards.set(r.id, card);
      }
      card.update(r, busy.has(r.id));
      const want = previous ? previous.nextSibling : rolloutList.firstChild;
      if (want !== card.el) rolloutList.insertBefore(card.el, want);
      previous = card.el;
    }
    for (const [id, card] of rolloutCards) {
      if (!seen.has(id)) {
        card.el.remove();
        rolloutCards.delete(id);
      }
    }
    rolloutsEmpty.hidden = wanted.length > 0;
  }

  function renderDrift() {
    const wanted = onlyDrift.checked ? drift.versions.filter((v) => v.drift) : drift.versions;
    const seen = new Set();
    /** @type {Element | null} */
    let previous = null;
    for (const v of wanted) {
      const key = `${v.drone_id}/${v.kind}`;
      seen.add(key);
      let row = driftRows.get(key);
      if (!row) {
        row = new DriftRow(v);
        driftRows.set(key, row);
      }
      row.update(v);
      const want = previous ? previous.nextSibling : driftBody.firstChild;
      if (want !== row.tr) driftBody.insertBefore(row.tr, want);
      previous = row.tr;
    }
    for (const [key, row] of driftRows) {
      if (!seen.has(key)) {
        row.tr.remove();
        driftRows.delete(key);
      }
    }
    driftTable.hidden = wanted.length === 0;
    driftEmpty.hidden = wanted.length > 0;
    setText(
      driftEmpty.firstChild instanceof HTMLElement ? driftEmpty.firstChild : driftEmpty,
      drift.versions.length ? "No drone drifts." : "No drone reports payloads yet.",
    );
    setText(
      driftNote,
      drift.drifting ? `${plural(drift.drifting, "payload")} not as deployed` : drift.versions.length ? "every drone as deployed" : "",
    );
  }

  /** @param {PayloadEvent} e */
  function keep(e) {
    if (e.id <= lastId && events.some((x) => x.id === e.id)) return;
    lastId = Math.max(lastId, e.id);
    events = [e, ...events.filter((x) => x.id !== e.id)].sort((a, b) => b.id - a.id).slice(0, EVENTS_SHOWN);
  }

  function renderEvents() {
    eventsEmpty.hidden = events.length > 0;
    eventList.replaceChildren(
      ...events.map((e) =>
        el(
          "li",
          { "data-type": e.type, class: `pl-event pl-ev-${e.type.replace(/^payload_/, "")}` },
          el("time", { datetime: e.ts, title: new Date(e.ts).toLocaleString() }, new Date(e.ts).toLocaleTimeString()),
          el("span", { class: "pl-ev-drone" }, e.drone_name ?? ""),
          el("span", {}, e.message),
        ),
      ),
    );
  }

  const poller = pagePoller(
    async () => {
      // Asked once: a controller without rollouts (its admin document has no
      // /admin/api/rollouts) gets plain deploys only, and no 404 every round.
      hasRollouts ??= await get("/admin/api/openapi.json").then((doc) => Boolean(doc?.paths?.["/admin/api/rollouts"]));
      const [payloads, versions, rolling] = await Promise.all([
        get("/admin/api/payloads"),
        get("/admin/api/drones/versions"),
        hasRollouts ? get("/admin/api/rollouts") : null,
      ]);
      list = payloads;
      drift = versions;
      rollouts = rolling ? rolling.rollouts : null;
      render();
    },
    { every: POLL_MS, what: "the payloads", live, problem },
  );

  function refresh() {
    poller.now();
  }

  /** A payload event: the lists again soon, at most every REFRESH_MS. */
  const soon = new Throttle(refresh, REFRESH_MS);
  const poke = () => soon.call();

  const stream = liveSocket(() => `/ws/events?type=${EVENT_TYPES.join(",")}${lastId ? `&since=${lastId}` : ""}`, {
    onMessage(e) {
      keep(e);
      renderEvents();
      poke();
    },
    onGap: poke,
  });

  async function loadEvents() {
    try {
      const answer = await get(`/admin/api/events?type=${EVENT_TYPES.join(",")}&limit=${EVENTS_SHOWN}`);
      for (const e of answer.events) keep(e);
      lastId = Math.max(lastId, answer.last_id ?? 0);
      renderEvents();
    } catch {
      // The poller's banner says why the controller cannot be asked.
    }
    if (active) stream.start();
  }

  return {
    el: section,
    show() {
      if (active) return;
      active = true;
      poller.start();
      loadEvents();
    },
    hide() {
      active = false;
      poller.stop();
      stream.stop();
      soon.cancel();
      confirm.close();
      deployDialog.close();
    },
  };
}
