// What the canvas shows, also in the DOM for assistive technology and
// tests: a visually hidden list of the drones by network, each item a
// button with the drone's description and data- attributes: its state as
// drawn, its position on the canvas (data-x, data-y), the last packet drawn
// for it and the protocol seq that caused it (data-last-packet,
// data-last-packet-seq, data-last-heartbeat-seq, data-last-ping-seq, ...;
// events: data-last-event, data-last-event-id).

import { groupsOf } from "./layout.js";
import { el, networkName, plural } from "./model.js";

/**
 * @typedef {import("../../fleet.js").Drone} Drone
 * @typedef {import("./layout.js").Scene} Scene
 */

export class DroneRecord {
  constructor() {
    this.list = el("ul", { class: "topo-list visually-hidden", "aria-label": "Drones by network" });
    /** drone id -> its <li> @type {Map<string, HTMLElement>} */
    this.items = new Map();
  }

  /** @param {string} id  @returns {HTMLButtonElement | null} */
  button(id) {
    return /** @type {HTMLButtonElement | null} */ (this.items.get(id)?.firstElementChild ?? null);
  }

  /**
   * Rebuilt when drones come, go or move between networks (or on first
   * use), else updated in place.
   * @param {Drone[]} drones
   * @param {Scene | null} scene
   * @param {Map<string, string>} drawnStates the state each node shows on the canvas
   * @param {(d: Drone) => string} describe
   * @param {{structure: boolean, focused: string | null}} how focused: the drone with the tab stop
   * @returns {string | null} the focused drone, null if it left
   */
  render(drones, scene, drawnStates, describe, { structure, focused }) {
    if (structure || this.list.childElementCount === 0) {
      const seen = new Set();
      const groupItems = [];
      for (const g of groupsOf(drones.slice())) {
        const inner = el("ul");
        for (const d of g.drones) {
          seen.add(d.id);
          let item = this.items.get(d.id);
          if (!item) {
            const button = el("button", { type: "button", tabindex: "-1" });
            item = el("li", { "data-drone-id": d.id, "data-packets": "0" }, button);
            this.items.set(d.id, item);
          }
          inner.append(item);
        }
        groupItems.push(
          el(
            "li",
            { "data-group": g.network },
            el("span", {}, `${networkName(g.network)}: ${plural(g.drones.length, "drone")}`),
            inner,
          ),
        );
      }
      for (const id of [...this.items.keys()]) if (!seen.has(id)) this.items.delete(id);
      // Moving the focused button through the document would drop its focus: give it back.
      const had = this.list.contains(document.activeElement) ? focused : null;
      this.list.replaceChildren(...groupItems);
      if (focused && !this.items.has(focused)) focused = null;
      const first = this.list.querySelector("button");
      for (const [id, item] of this.items) {
        const button = /** @type {HTMLButtonElement} */ (item.firstElementChild);
        button.tabIndex = id === focused || (!focused && button === first) ? 0 : -1;
      }
      if (had) this.button(had)?.focus({ preventScroll: true });
    }
    for (const d of drones) {
      const item = this.items.get(d.id);
      if (!item) continue;
      const data = item.dataset;
      const node = scene?.nodes.get(d.id);
      /** @type {Record<string, string>} */
      const fields = {
        drone: d.name,
        network: d.network || "",
        state: drawnStates.get(d.id) ?? "", // as drawn: a canvas that missed a change shows here
        job: d.current_job_id ?? "",
        x: node ? String(Math.round(node.x)) : "",
        y: node ? String(Math.round(node.y)) : "",
      };
      for (const [name, value] of Object.entries(fields)) if (data[name] !== value) data[name] = value;
      const text = describe(d);
      const button = /** @type {HTMLElement} */ (item.firstElementChild);
      if (button.textContent !== text) button.textContent = text;
    }
    return focused;
  }

  /** Only this drone's button in the tab order. @param {string | null} id */
  tabStop(id) {
    for (const [other, item] of this.items) /** @type {HTMLElement} */ (item.firstElementChild).tabIndex = other === id ? 0 : -1;
  }

  /**
   * A packet drawn for a drone, and what caused it.
   * @param {string} droneId
   * @param {string} type the protocol message or event type
   * @param {number | null} seq the protocol seq
   * @param {number | null} eventId
   */
  packet(droneId, type, seq, eventId) {
    const item = this.items.get(droneId);
    if (!item) return;
    const data = item.dataset;
    data.packets = String(Number(data.packets || 0) + 1);
    data.lastPacket = type;
    if (seq !== null) {
      data.lastPacketSeq = String(seq);
      // e.g. data-last-heartbeat-seq, data-last-start-build-seq
      const name = `last${type.replace(/(^|_)(\w)/g, (_m, _s, c) => c.toUpperCase())}Seq`;
      data[name] = String(seq);
    }
    if (eventId !== null) this.event(droneId, type, eventId);
  }

  /** An event about a drone. @param {string} droneId  @param {string} type  @param {number} eventId */
  event(droneId, type, eventId) {
    const item = this.items.get(droneId);
    if (!item) return;
    item.dataset.lastEvent = type;
    item.dataset.lastEventId = String(eventId);
  }
}
