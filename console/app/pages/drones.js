// Drones: the fleet as a table, from the fleet store (a poll every 2 s while
// shown), with each drone's actions: ping, terminal, logs, drain, ground,
// restart, reboot.
//
// Rows are kept by drone name and updated in place, so a poll never closes
// an open menu, a dialog or takes the focus away. Whether a drone may be
// rebooted is the healer's call (its effective type, its hypervisor
// access): the menu asks GET /admin/api/drones/{name}/health when it opens.

import { get, post } from "../api.js";
import { fleet } from "../fleet.js";
import { ActionMenu, ConfirmDialog, Toaster, ago, bytes, el, ms, setText } from "../ui.js";

/** @typedef {import("../fleet.js").Drone} Drone */
const REBOOTABLE = new Set(["lxc", "qemu"]);

const path = (name, action = "") => `/admin/api/drones/${encodeURIComponent(name)}${action ? `/${action}` : ""}`;

function sub(text = "") {
  return el("span", { class: "cell-sub" }, text);
}

/** Why the healer would refuse to reboot this drone, or "" if it would try. */
function rebootRefusal(health) {
  if (!REBOOTABLE.has(health.type)) return `a ${health.type} drone is never rebooted (only lxc and qemu are)`;
  if (!health.access.host || !health.access.reboot) return "no hypervisor host or reboot command is set for it";
  return "";
}

/** One drone's row; its cells and actions are built once and updated by each poll. */
class DroneRow {
  constructor(page, name) {
    this.page = page;
    this.name = name;
    this.drone = null;
    this.health = null;
    this.busy = new Set();

    this.nameSub = sub();
    this.status = el("span", { class: "pill" });
    this.draining = el("span", { class: "pill pill-draining", hidden: true }, "draining");
    this.grounded = el("span", { class: "pill pill-grounded", hidden: true }, "grounded");
    this.updating = el("span", { class: "pill pill-updating", hidden: true }, "updating");
    this.beat = sub();
    this.type = el("td", {});
    this.cores = el("td", { class: "num" });
    this.load = el("td", { class: "num" });
    this.ping = el("td", { class: "num" });
    this.diskText = el("span", { class: "disk-pct" });
    this.diskFill = el("span", { class: "meter-fill" });
    this.diskFree = sub();
    this.agentVersion = el("span", { class: "mono" });
    this.payloadVersion = sub();
    this.job = el("td", { class: "job-cell" });

    this.pingButton = el("button", { class: "btn btn-small", type: "button", onclick: () => this.doPing() }, "Ping");
    this.terminalButton = el(
      "button",
      {
        class: "btn btn-small",
        type: "button",
        // Through the agent while it is connected, else over SSH if the drone has access.
        onclick: () => page.ctx.go("terminal", this.drone?.connected ? { drone: name } : { drone: name, via: "ssh" }),
      },
      "Terminal",
    );
    this.menu = new ActionMenu("More", `More actions for ${name}`, () => this.loadHealth());
    this.menu.button.setAttribute("aria-label", `More actions for ${name}`);
    this.menu.add(el("a", { href: `#/logs?drone=${encodeURIComponent(name)}`, class: "menu-item" }, "Logs"));
    this.menu.list.append(el("hr", { class: "menu-sep" }));
    this.drainItem = this.menu.add(el("button", { type: "button", class: "menu-item" }), () => this.toggleHold("drain"));
    this.groundItem = this.menu.add(el("button", { type: "button", class: "menu-item" }), () => this.toggleHold("ground"));
    this.menu.list.append(el("hr", { class: "menu-sep" }));
    this.restartItem = this.menu.add(
      el("button", { type: "button", class: "menu-item menu-danger" }, "Restart agent…"),
      () => this.restart(),
    );
    this.rebootLabel = el("span", {}, "Reboot…");
    this.rebootWhy = el("span", { class: "menu-why" }, "checking…");
    this.rebootItem = this.menu.add(
      el(
        "button",
        { type: "button", class: "menu-item menu-danger", "aria-disabled": "true" },
        this.rebootLabel,
        this.rebootWhy,
      ),
      () => this.reboot(),
    );

    this.tr = el(
      "tr",
      { "data-drone": name },
      el("td", {}, el("span", { class: "drone-name" }, name), this.nameSub),
      el("td", {}, el("span", { class: "pills" }, this.status, this.draining, this.grounded, this.updating), this.beat),
      this.type,
      this.cores,
      this.load,
      this.ping,
      el("td", {}, el("span", { class: "disk" }, el("span", { class: "meter" }, this.diskFill), this.diskText), this.diskFree),
      el("td", {}, this.agentVersion, this.payloadVersion),
      this.job,
      el("td", { class: "actions" }, el("span", { class: "action-row" }, this.pingButton, this.terminalButton, this.menu.button)),
    );
    // The popover sits in the top layer; in the row's cell it goes with the row.
    this.tr.lastElementChild.append(this.menu.list);
  }

  update(drone, now) {
    this.drone = drone;
    const d = drone.dispatch;
    const tr = this.tr;
    tr.dataset.status = drone.status;
    tr.dataset.draining = String(Boolean(d?.draining));
    tr.dataset.grounded = String(Boolean(d?.grounded));
    tr.dataset.connected = String(drone.connected);

    setText(this.nameSub, [drone.hostname, drone.network].filter(Boolean).join(" · "));
    setText(this.status, drone.status);
    this.status.className = `pill pill-${drone.status}`;
    this.draining.hidden = !d?.draining;
    this.draining.title = d?.draining ? `drained by ${d.drained_by}: finishes its job, takes no new one` : "";
    this.grounded.hidden = !d?.grounded;
    this.grounded.title = !d?.grounded
      ? ""
      : d.grounded_by
        ? `grounded by ${d.grounded_by} until ungrounded`
        : `circuit breaker: ${d.failures} failures in a row` +
          (d.grounded_until ? `, until ${new Date(d.grounded_until).toLocaleTimeString()}` : "");
    this.updating.hidden = !d?.held_for_payload;
    this.updating.title = d?.held_for_payload ? `takes no new build until it has its payload: ${d.held_for_payload}` : "";
    setText(this.beat, drone.last_heartbeat_at ? `beat ${ago(drone.last_heartbeat_at, now)}` : "no heartbeat yet");

    const type = this.health?.type ?? drone.drone_type ?? "unknown";
    setText(this.type, type);
    const why = drone.drone_type_reason ? ` (${drone.drone_type_reason})` : "";
    this.type.title =
      this.health && this.health.type !== drone.drone_type
        ? `set by an admin; the agent says ${drone.drone_type}${why}`
        : drone.drone_type_reason || "";
    setText(this.cores, String(drone.cores));
    setText(this.load, drone.connected ? drone.load1.toFixed(2) : "–");
    this.load.title = drone.connected
      ? `load ${[drone.load1, drone.load5, drone.load15].join(" / ")} · cpu ${drone.cpu_percent}% · memory ${drone.memory_percent}%`
      : "";
    setText(this.ping, drone.connected ? ms(drone.ping_latency_ms) : "–");
    this.ping.title = drone.last_pong_at ? `last pong ${ago(drone.last_pong_at, now)}` : "";

    const pct = drone.disk_percent ?? 0;
    setText(this.diskText, drone.connected || pct ? `${Math.round(pct)}%` : "–");
    this.diskFill.style.width = `${Math.min(100, Math.max(0, pct))}%`;
    this.diskFill.dataset.level = pct >= 90 ? "bad" : pct >= 75 ? "warn" : "ok";
    setText(this.diskFree, drone.disk_free_bytes ? `${bytes(drone.disk_free_bytes)} free` : "");

    setText(this.agentVersion, drone.agent_version || "–");
    setText(this.payloadVersion, `payload ${drone.payload_version || "–"}`);

    const jobId = drone.current_job_id;
    const running = d?.running_jobs ?? 0;
    if (this.job.dataset.job !== (jobId ?? "")) {
      this.job.dataset.job = jobId ?? "";
      this.job.replaceChildren(
        jobId
          ? el("a", { class: "mono", href: `#/queue?job=${encodeURIComponent(jobId)}`, title: "Show the job" }, jobId)
          : el("span", { class: "muted" }, "idle"),
        sub(),
      );
    }
    setText(this.job.lastElementChild, drone.emerge_running ? "emerge running" : running ? `${running} assigned` : "");

    this.pingButton.disabled = !drone.connected || this.busy.has("ping");
    this.pingButton.title = drone.connected
      ? `Ping ${this.name} over its control stream`
      : `${this.name} is ${drone.status}: no control stream to ping over`;
    this.terminalButton.disabled = !drone.connected && !drone.ssh_access;
    setText(this.terminalButton, drone.connected || !drone.ssh_access ? "Terminal" : "Terminal (SSH)");
    this.terminalButton.title = drone.connected
      ? `Open a root shell on ${this.name}`
      : drone.ssh_access
        ? `${this.name} is ${drone.status}: open a shell over SSH from the controller`
        : `${this.name} is ${drone.status}: no shell without a control stream or an ssh access setting`;
    this.updateHolds();
  }

  updateHolds() {
    const d = this.drone?.dispatch;
    const noBuilds = !d;
    setText(this.drainItem, d?.draining ? "Undrain" : "Drain");
    setText(this.groundItem, d?.grounded ? "Unground" : "Ground…");
    for (const [item, action] of [
      [this.drainItem, "drain"],
      [this.groundItem, "ground"],
    ]) {
      const off = noBuilds || this.busy.has(action);
      item.setAttribute("aria-disabled", String(off));
      item.title = noBuilds ? "builds are off on this controller: nothing to dispatch" : "";
    }
    this.restartItem.setAttribute("aria-disabled", String(this.busy.has("restart")));
  }

  async loadHealth() {
    try {
      this.health = await get(path(this.name, "health"));
      this.setReboot(rebootRefusal(this.health));
    } catch (error) {
      this.setReboot(error.message);
    }
    if (this.drone) this.update(this.drone, Date.now());
    if (this.menu.isOpen) this.menu.place(); // the reason may have made it taller
  }

  setReboot(refusal) {
    const off = Boolean(refusal) || this.busy.has("reboot");
    this.rebootItem.setAttribute("aria-disabled", String(off));
    this.rebootItem.title = refusal ? `Reboot is off: ${refusal}` : `Reboot ${this.name} through its hypervisor host`;
    setText(this.rebootWhy, refusal);
    this.rebootWhy.hidden = !refusal;
  }

  async act(action, work) {
    this.busy.add(action);
    this.updateHolds();
    try {
      await work();
    } catch (error) {
      this.page.toasts.show("error", `${this.name}: ${action} failed`, error.message, { "data-action": action });
    } finally {
      this.busy.delete(action);
      this.updateHolds();
    }
  }

  doPing() {
    this.pingButton.disabled = true;
    return this.act("ping", async () => {
      const pong = await post(path(this.name, "ping"));
      const failing = pong.checks.filter((c) => !c.ok);
      setText(this.ping, ms(pong.latency_ms));
      this.tr.dataset.pingMs = String(pong.latency_ms);
      this.page.toasts.show(
        failing.length ? "warn" : "ok",
        `${this.name} answered in ${ms(pong.latency_ms)}`,
        failing.length
          ? `failing: ${failing.map((c) => `${c.name}${c.detail ? ` (${c.detail})` : ""}`).join("; ")}`
          : `${pong.checks.length} check${pong.checks.length === 1 ? "" : "s"} pass · load ${pong.load1.toFixed(2)}`,
        { "data-action": "ping", "data-drone": this.name },
      );
    }).finally(() => {
      if (this.drone) this.pingButton.disabled = !this.drone.connected;
    });
  }

  async toggleHold(kind) {
    const d = this.drone?.dispatch;
    if (!d || this.busy.has(kind)) return;
    const on = kind === "drain" ? !d.draining : !d.grounded;
    const action = on ? kind : `un${kind}`;
    if (action === "ground") {
      const yes = await this.page.dialog.ask({
        title: `Ground ${this.name}?`,
        text: `${this.name} gets no new work until someone ungrounds it. A build it runs now finishes.`,
        confirm: "Ground",
        returnTo: this.menu.button,
      });
      if (!yes) return;
    }
    await this.act(kind, async () => {
      const answer = await post(path(this.name, action));
      this.drone = { ...this.drone, dispatch: answer.dispatch };
      this.update(this.drone, Date.now());
      const said = {
        drain: "drained: it finishes its job and takes no new one",
        undrain: "back in the rotation",
        ground: "grounded until ungrounded",
        unground: "ungrounded",
      }[action];
      this.page.toasts.show("ok", `${this.name} ${said}`, "", { "data-action": action, "data-drone": this.name });
    });
  }

  async restart() {
    if (this.busy.has("restart")) return;
    const yes = await this.page.dialog.ask({
      title: `Restart the agent on ${this.name}?`,
      text:
        "The agent stops and starts again (over its control stream, else over SSH). " +
        "Its control stream drops for a moment and the healer watches it come back.",
      confirm: "Restart",
      returnTo: this.menu.button,
    });
    if (!yes) return;
    await this.act("restart", async () => {
      const step = await post(path(this.name, "restart"));
      this.page.toasts.show(step.done ? "ok" : "warn", `${this.name}: restart`, step.detail, {
        "data-action": "restart",
        "data-drone": this.name,
      });
    });
  }

  async reboot() {
    if (this.rebootItem.getAttribute("aria-disabled") === "true") return;
    const host = this.health?.access?.host ?? "its hypervisor host";
    const yes = await this.page.dialog.ask({
      title: `Reboot ${this.name}?`,
      text: `${host} reboots the ${this.health?.type ?? ""} guest. A build it runs now is lost and requeued.`,
      confirm: "Reboot",
      returnTo: this.menu.button,
    });
    if (!yes) return;
    await this.act("reboot", async () => {
      const step = await post(path(this.name, "reboot"));
      this.page.toasts.show(step.done ? "ok" : "warn", `${this.name}: reboot`, step.detail, {
        "data-action": "reboot",
        "data-drone": this.name,
      });
    });
  }
}

export function create(ctx) {
  const summary = el("p", { class: "page-sub" }, "Loading…");
  const live = el("span", { class: "live", "aria-live": "polite" });
  const body = el("tbody");
  const empty = el(
    "div",
    { class: "empty", hidden: true },
    el("strong", {}, "No drone has connected yet."),
    el("span", {}, "Create a join token (POST /admin/api/tokens) and run the enroll command it returns on a drone."),
  );
  const problem = el("div", { class: "banner banner-error", role: "alert", hidden: true });
  const th = (text, cls = "") => el("th", { scope: "col", class: cls || null }, text);
  const table = el(
    "table",
    { class: "table table-drones", "aria-label": "Drones" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        th("Name"),
        th("Status"),
        th("Type"),
        th("Cores", "num"),
        th("Load", "num"),
        th("Ping", "num"),
        th("Disk"),
        th("Versions"),
        th("Job"),
        el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, "Actions")),
      ),
    ),
    body,
  );
  const toasts = new Toaster();
  const dialog = new ConfirmDialog();
  const section = el(
    "section",
    { class: "page", "aria-labelledby": "drones-title" },
    el("header", { class: "page-head" }, el("div", {}, el("h1", { id: "drones-title" }, "Drones"), summary), live),
    problem,
    el("div", { class: "panel" }, table, empty),
    dialog.el,
    toasts.el,
  );

  const page = { ctx, toasts, dialog };
  /** @type {Map<string, DroneRow>} */
  const rows = new Map();
  /** @type {(() => void) | null} */
  let unsubscribe = null;

  /** @param {Drone[]} list  @param {number} at when the list was loaded */
  function render(list, at) {
    const now = Date.now();
    const drones = [...list].sort((a, b) => a.name.localeCompare(b.name));
    const seen = new Set();
    /** @type {HTMLElement | null} */
    let previous = null;
    for (const drone of drones) {
      seen.add(drone.name);
      let row = rows.get(drone.name);
      if (!row) {
        row = new DroneRow(page, drone.name);
        rows.set(drone.name, row);
      }
      row.update(drone, now);
      // Rows move only when the order changes (a moved row would lose the focus).
      const want = previous ? previous.nextSibling : body.firstChild;
      if (want !== row.tr) body.insertBefore(row.tr, want);
      previous = row.tr;
    }
    for (const [name, row] of rows) {
      if (!seen.has(name)) {
        row.menu.close();
        row.tr.remove();
        rows.delete(name);
      }
    }
    empty.hidden = drones.length > 0;
    table.hidden = drones.length === 0;
    const online = drones.filter((d) => d.status === "online");
    const cores = online.reduce((sum, d) => sum + d.cores, 0);
    const held = drones.filter((d) => d.dispatch?.draining || d.dispatch?.grounded).length;
    summary.textContent =
      `${drones.length} drone${drones.length === 1 ? "" : "s"} · ${online.length} online · ` +
      `${cores} core${cores === 1 ? "" : "s"} ready` +
      (held ? ` · ${held} held (draining or grounded)` : "");
    live.textContent = `Live · ${new Date(at).toLocaleTimeString()}`;
    live.classList.remove("stale");
  }

  /** @param {import("../fleet.js").FleetUpdate} update */
  function onFleet(update) {
    if (update.error) {
      problem.textContent = `Could not load the drones: ${update.error.message}`;
      problem.hidden = false;
      live.classList.add("stale");
      return;
    }
    problem.hidden = true;
    render(update.drones, update.at);
  }

  return {
    el: section,
    show() {
      unsubscribe ??= fleet.subscribe(onFleet);
    },
    hide() {
      unsubscribe?.();
      unsubscribe = null;
      for (const row of rows.values()) row.menu.close();
      dialog.close();
    },
  };
}
