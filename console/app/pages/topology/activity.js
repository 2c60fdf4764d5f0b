// Under the topology: the 24-hour activity waveform, and beside it the
// recent events (live, from the page's /ws/events) or, while the scrubber
// rests on a moment, the events of that moment.

import { ApiError, get } from "../../api.js";
import { Waveform } from "/common/waveform.js";
import { el, plural } from "./model.js";

const RECENT_EVENTS = 30;
const MOMENT_EVENTS = 50;

/**
 * @typedef {{id: number, ts: string, type: string, message: string, drone_id: string | null,
 *   drone_name?: string | null, data?: any}} SwarmEvent
 * @typedef {{start: Date, end: Date, latest?: boolean}} Moment
 */

/** @param {string} iso */
function timeOf(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** @param {SwarmEvent} e */
function eventRow(e) {
  return el(
    "li",
    { "data-event-id": String(e.id), "data-type": e.type },
    el("time", { datetime: e.ts }, timeOf(e.ts)),
    el("span", { class: "topo-event-type" }, e.type),
    el("span", { class: "topo-event-message", title: e.message }, e.message),
  );
}

export class Activity {
  constructor() {
    const waveHost = el("div", { class: "topo-wave" });
    this.title = el("h3", { id: "topo-moment-title" }, "Recent events");
    this.note = el("span", { class: "muted" }, "live");
    this.list = el("ol", { class: "topo-events", "aria-labelledby": "topo-moment-title", "data-moment": "" });
    this.el = el(
      "section",
      { class: "topo-activity", "aria-labelledby": "topo-activity-title" },
      el(
        "div",
        { class: "topo-activity-wave" },
        el(
          "div",
          { class: "topo-activity-head" },
          el("h2", { id: "topo-activity-title" }, "Activity · last 24 hours"),
          el("span", { class: "muted" }, "Drag the scrubber, or focus it and use ← →, to see the events of a moment"),
        ),
        waveHost,
      ),
      el("div", { class: "topo-moment" }, el("div", { class: "topo-activity-head" }, this.title, this.note), this.list),
    );
    /** newest first, at most RECENT_EVENTS @type {SwarmEvent[]} */
    this.recent = [];
    /** @type {Moment | null} */
    this.moment = null;
    this.ask = 0;
    this.wave = new Waveform(waveHost, {
      url: "/admin/api/activity",
      load: get,
      label: "Activity over the last 24 hours: drag to see the events of a moment",
      // Dragging reports each bucket it passes; the newest question wins.
      onScrub: (/** @type {Moment | null} */ m) => this.showMoment(m),
    });
  }

  show() {
    this.refresh();
    this.wave.show();
  }

  hide() {
    this.wave.hide();
  }

  /** A live event, newest. @param {SwarmEvent} e */
  add(e) {
    this.recent.unshift(e);
    if (this.recent.length > RECENT_EVENTS) this.recent.length = RECENT_EVENTS;
    if (this.moment !== null) return;
    this.list.prepend(eventRow(e));
    while (this.list.children.length > RECENT_EVENTS) this.list.lastChild?.remove();
  }

  /** @private */
  showRecent() {
    this.title.textContent = "Recent events";
    this.note.textContent = "live";
    this.list.dataset.moment = "";
    this.list.replaceChildren(...this.recent.map(eventRow));
    if (!this.recent.length) this.list.append(el("li", { class: "topo-events-empty" }, "No events yet."));
  }

  /** The newest events from the controller (on show, and after a gap in the live ones). */
  async refresh() {
    try {
      const reply = await get("/admin/api/events?limit=20");
      const known = new Set(this.recent.map((e) => e.id));
      this.recent = [...this.recent, .../** @type {SwarmEvent[]} */ (reply.events).reverse().filter((e) => !known.has(e.id))]
        .sort((a, b) => b.id - a.id)
        .slice(0, RECENT_EVENTS);
      if (this.moment === null) this.showRecent();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
    }
  }

  /** @private @param {Moment | null} m */
  async showMoment(m) {
    this.moment = m;
    if (m === null) {
      this.showRecent();
      return;
    }
    const ask = ++this.ask;
    const from = m.start.toISOString();
    /** @param {Date} d */
    const hm = (d) => d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    this.title.textContent = `Events ${hm(m.start)}–${hm(m.end)}`;
    this.note.textContent = "loading…";
    this.list.dataset.moment = from;
    try {
      const reply = await get(`/admin/api/events?since=${encodeURIComponent(from)}&limit=${MOMENT_EVENTS}`);
      if (ask !== this.ask || this.moment === null) return;
      const end = m.end.getTime();
      /** @type {SwarmEvent[]} */
      const events = reply.events;
      const within = events.filter((e) => m.latest || Date.parse(e.ts) < end);
      const more = events.length === MOMENT_EVENTS && within.length === events.length;
      this.note.textContent = within.length ? `${more ? "first " : ""}${plural(within.length, "event")}` : "nothing happened";
      this.list.dataset.count = String(within.length);
      this.list.replaceChildren(...within.map(eventRow));
      if (!within.length) this.list.append(el("li", { class: "topo-events-empty" }, "No events in this moment."));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (ask === this.ask) this.note.textContent = `could not load: ${error.message}`;
    }
  }
}
