// The side panel of the drone selected on the topology: its state and
// figures, and links to its terminal, its logs and the drones page.

import { ago } from "../../ui.js";
import { el, networkName, plural, stateOf } from "./model.js";

/** @typedef {import("../../fleet.js").Drone} Drone */

export class DronePanel {
  /** @param {() => void} onClose the close button or Escape */
  constructor(onClose) {
    this.onClose = onClose;
    this.el = el("aside", { class: "topo-panel", hidden: true, "aria-labelledby": "topo-panel-title", tabindex: "-1" });
    this.el.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        onClose();
      }
    });
  }

  /**
   * Rendered again on every poll: the focus stays on the same control.
   * @param {Drone | undefined} d the drone, or undefined once it has left the fleet
   * @param {(id: string) => string | null | undefined} cpvOf the package a job builds, if known
   */
  render(d, cpvOf) {
    const panel = this.el;
    if (!d) {
      panel.replaceChildren(
        el("div", { class: "topo-panel-head" }, el("h2", { id: "topo-panel-title" }, "Drone gone"), this.closeButton()),
        el("p", { class: "muted" }, "This drone is no longer in the fleet."),
      );
      return;
    }
    const now = Date.now();
    const state = stateOf(d);
    /** @param {string} label  @param {Node | string} value */
    const row = (label, value) => [el("dt", {}, label), el("dd", {}, value)];
    const job = d.current_job_id
      ? el("span", {}, cpvOf(d.current_job_id) ?? "…", el("span", { class: "drone-host" }, d.current_job_id))
      : el("span", { class: "muted" }, d.emerge_running ? "emerge running" : "idle");
    const dispatch = d.dispatch
      ? [
          d.dispatch.grounded ? `grounded${d.dispatch.grounded_by ? ` by ${d.dispatch.grounded_by}` : ""}` : null,
          d.dispatch.draining ? `draining${d.dispatch.drained_by ? ` (by ${d.dispatch.drained_by})` : ""}` : null,
          `${plural(d.dispatch.running_jobs ?? 0, "running job")}`,
          d.dispatch.failures ? `${plural(d.dispatch.failures, "failure")} in a row` : null,
          d.dispatch.held_for_payload ? `held for its payload: ${d.dispatch.held_for_payload}` : null,
        ]
          .filter(Boolean)
          .join(" · ")
      : "builds are off";
    /** @param {string} href  @param {string} label  @param {boolean} [enabled]  @param {string} [why] */
    const link = (href, label, enabled = true, why = "") =>
      enabled
        ? el("a", { class: "btn btn-small", href, "data-focus-key": label }, label)
        : el("span", { class: "btn btn-small topo-link-off", "aria-disabled": "true", title: why }, label);
    const name = encodeURIComponent(d.name);
    const active = document.activeElement;
    const focusKey = active instanceof HTMLElement && panel.contains(active) ? active.dataset.focusKey : undefined;
    panel.dataset.drone = d.name;
    panel.replaceChildren(
      el(
        "div",
        { class: "topo-panel-head" },
        el("div", {}, el("h2", { id: "topo-panel-title" }, d.name), el("span", { class: "drone-host" }, d.hostname || d.id)),
        this.closeButton(),
      ),
      el("span", { class: `pill pill-${state}` }, state),
      el(
        "dl",
        { class: "topo-facts" },
        ...row("Network", networkName(d.network || "")),
        ...row("Type", d.drone_type || "unknown"),
        ...row("Cores", String(d.cores)),
        ...row("Load", d.connected ? [d.load1, d.load5, d.load15].map((x) => x.toFixed(2)).join(" / ") : "–"),
        ...row("CPU · mem · disk", d.connected ? `${d.cpu_percent}% · ${d.memory_percent}% · ${d.disk_percent}%` : "–"),
        ...row("Ping", d.ping_latency_ms == null ? "–" : `${d.ping_latency_ms.toFixed(1)} ms`),
        ...row("Heartbeat", ago(d.last_heartbeat_at, now)),
        ...row("Job", job),
        ...row("Dispatch", dispatch),
        ...row("Agent", d.agent_version || "–"),
      ),
      el(
        "div",
        { class: "topo-panel-links" },
        link(`#/terminal?drone=${name}`, "Terminal", d.connected, `${d.name} is ${d.status}: no shell without a control stream`),
        link(`#/logs?drone=${name}`, "Logs"),
        link("#/drones", "Drones page"),
      ),
    );
    if (focusKey) /** @type {HTMLElement | null} */ (panel.querySelector(`[data-focus-key="${focusKey}"]`))?.focus({ preventScroll: true });
  }

  /** @private */
  closeButton() {
    return el(
      "button",
      {
        class: "btn btn-small btn-quiet topo-close",
        type: "button",
        "aria-label": "Close the details",
        "data-focus-key": "close",
        onclick: this.onClose,
      },
      "×",
    );
  }
}
