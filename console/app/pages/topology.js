// Topology: the controller in the middle, the drones around it grouped by
// network, and the control-stream traffic travelling along the edges as it
// happens. Every packet is a real message: an entry of /ws/protocol
// (heartbeat, ping, pong, start_build, build_event, hello, open_channel...)
// or an event of /ws/events (a job done or failed on a drone, a change of
// state). Nothing moves without one.
//
// This module is the page: the fleet (from the fleet store), the two live
// streams, input, and the summary. The rest is in topology/:
//   model.js     packet kinds, drone states, networks
//   layout.js    where the controller, the regions and the drones go
//   drawing.js   the two canvases: the base layer (regions, edges, nodes),
//                painted when the fleet or the size changes, and the
//                effects layer (packets, pulses, hover and focus rings),
//                painted by requestAnimationFrame only while something moves
//   traffic.js   the packets in flight and their budget
//   record.js    the visually hidden list of the drones (for assistive
//                technology and tests)
//   panel.js     the selected drone's panel
//   activity.js  the activity waveform and the recent events
//
// A big fleet stays smooth: heartbeats are sampled by the controller
// (/ws/protocol?sample=N, so about HEARTBEAT_BUDGET a second reach the
// page), and traffic.js merges, budgets and caps the packets. The stage's
// data- attributes count them (data-packets-drawn, -merged, -skipped,
// -dropped by the controller for a slow reader, data-in-flight).

import { get, liveSocket } from "../api.js";
import { fleet } from "../fleet.js";
import { Activity } from "./topology/activity.js";
import { Painter } from "./topology/drawing.js";
import { groupsOf, layout, nodeAt } from "./topology/layout.js";
import { EVENT_KINDS, KINDS, PROTOCOL_KINDS, STATES, clamp, el, ordinal, plural, stateOf } from "./topology/model.js";
import { DronePanel } from "./topology/panel.js";
import { DroneRecord } from "./topology/record.js";
import { Traffic } from "./topology/traffic.js";

/**
 * @typedef {import("../fleet.js").Drone} Drone
 * @typedef {import("../fleet.js").FleetUpdate} FleetUpdate
 * @typedef {import("./topology/layout.js").Scene} Scene
 * @typedef {import("./topology/activity.js").SwarmEvent} SwarmEvent
 * @typedef {{seq: number, ts: string, drone_id: string, type: string, direction: string}} ProtocolEntry
 */

const HEARTBEAT_BUDGET = 40; // heartbeat packets a second the page asks the controller for at most
const COUNTERS_MS = 500; // the stage's packet counters are written this often
const RESAMPLE_AFTER_MS = 10_000; // a new sample rate waits this long after the last one
const JOB_CACHE = 512;
const JOB_FETCHES = 3; // job lookups at once

/** @param {{go: Function, settle: (id: string) => void}} ctx */
export function create(ctx) {
  // The stage: two canvases and the accessible record of what they show.
  const base = /** @type {HTMLCanvasElement} */ (el("canvas", { class: "topo-canvas", "aria-hidden": "true" }));
  const fx = /** @type {HTMLCanvasElement} */ (el("canvas", { class: "topo-canvas topo-fx", "aria-hidden": "true" }));
  const tip = el("div", { class: "topo-tip", hidden: true, "aria-hidden": "true" });
  const record = new DroneRecord();
  const list = record.list;
  const emptyNote = el(
    "div",
    { class: "topo-empty", hidden: true },
    el("strong", {}, "No drone has connected yet."),
    el("span", {}, "Create a join token (POST /admin/api/tokens) and run the enroll command it returns on a drone."),
  );
  const legend = el("ul", { class: "topo-legend", "aria-label": "Legend" });
  const sampleNote = el("li", { class: "topo-legend-note", hidden: true });
  for (const [kind, k] of Object.entries(KINDS)) {
    legend.append(el("li", { "data-kind": kind, title: k.detail }, el("span", { class: "topo-swatch", swatch: k.color }), k.label));
  }
  legend.append(el("li", { class: "topo-legend-sep", "aria-hidden": "true" }));
  for (const [state, s] of Object.entries(STATES)) {
    legend.append(
      el("li", { "data-state": state }, el("span", { class: "topo-swatch topo-swatch-node", swatch: s.color }), s.label),
    );
  }
  legend.append(sampleNote);
  const stage = el(
    "div",
    {
      class: "topo-stage",
      "data-packets-drawn": "0",
      "data-packets-merged": "0",
      "data-packets-skipped": "0",
      "data-packets-dropped": "0",
      "data-in-flight": "0",
      "data-drones": "0",
      "data-sample": "1",
    },
    base,
    fx,
    tip,
    list,
    emptyNote,
    legend,
  );

  const panel = new DronePanel(closePanel);
  const summary = el("p", { class: "page-sub" }, "Loading…");
  const live = el("span", { class: "live stale", "aria-live": "polite" }, "Connecting…");
  const problem = el("div", { class: "banner banner-error", role: "alert", hidden: true });
  const activity = new Activity();
  const body = el("div", { class: "topo-body" }, stage, panel.el);
  const page = el(
    "section",
    { class: "page page-fill topo", "aria-labelledby": "topology-title" },
    el("header", { class: "page-head" }, el("div", {}, el("h1", { id: "topology-title" }, "Topology"), summary), live),
    problem,
    body,
    activity.el,
  );

  // -- state --------------------------------------------------------------------

  let active = false;
  /** @type {(() => void) | null} */
  let unsubscribe = null;
  /** @type {Drone[]} */
  let drones = [];
  /** @type {Map<string, Drone>} */
  let byId = new Map();
  /** @type {Scene | null} */
  let scene = null;
  let sceneKey = "";
  const painter = new Painter(base, fx, page, jobText);
  const traffic = new Traffic();
  /** @type {number | null} */
  let frame = null;
  /** @type {{selected: string | null, hover: string | null, focused: string | null}} */
  const marks = { selected: null, hover: null, focused: null };
  let windowPackets = 0;
  let windowStart = performance.now();
  let sample = 1;
  let sampleSetAt = -Infinity;
  /** job id -> cpv; undefined while asked for, null when it cannot be known @type {Map<string, string | null | undefined>} */
  const jobs = new Map();
  /** @type {string[]} */
  const jobQueue = [];
  let jobFetching = 0;
  /** @type {string | null} a drone name from #/topology?drone=, before the fleet is loaded */
  let pendingSelect = null;
  const written = new Map(); // stage data- attributes as last written
  let countersAt = 0;

  // -- data ---------------------------------------------------------------------

  /** @param {string | null} message */
  function setProblem(message) {
    problem.textContent = message ?? "";
    problem.hidden = !message;
  }

  /** @param {FleetUpdate} update */
  function onFleet(update) {
    if (!active) return;
    if (update.error) {
      setProblem(`Could not load the drones: ${update.error.message}`);
      live.classList.add("stale");
      return;
    }
    setProblem(null);
    accept(update.drones);
  }

  /** @param {Drone[]} list */
  function accept(list) {
    drones = list;
    byId = new Map(list.map((d) => [d.id, d]));
    for (const d of list) {
      if (d.current_job_id && !jobs.has(d.current_job_id)) lookUpJob(d.current_job_id);
    }
    const key = groupsOf(list.slice())
      .map((g) => `${g.network}:${g.drones.map((d) => `${d.id}=${d.name}`).join(",")}`)
      .join("|");
    const moved = key !== sceneKey;
    if (moved) {
      sceneKey = key;
      relayout();
    } else if (scene) {
      // Same places, new figures: the scene's drones are this poll's.
      for (const [id, node] of scene.nodes) node.drone = byId.get(id) ?? node.drone;
      for (const r of scene.regions) r.drones = r.drones.map((d) => byId.get(d.id) ?? d);
      paintBase();
    }
    renderRecord(moved);
    renderSummary();
    if (pendingSelect !== null) {
      const name = pendingSelect;
      const found = list.find((d) => d.name === name);
      pendingSelect = null;
      if (found) select(found.id);
    }
    if (marks.selected) renderPanel();
    resample();
    // The protocol stream opens once the fleet's size says how to sample it.
    if (active && !protocolSocket.running) protocolSocket.start();
  }

  /** @param {string} id */
  function lookUpJob(id) {
    jobs.set(id, undefined); // asked for
    jobQueue.push(id);
    pumpJobs();
  }

  function pumpJobs() {
    while (jobFetching < JOB_FETCHES && jobQueue.length) {
      const id = /** @type {string} */ (jobQueue.shift());
      jobFetching += 1;
      get(`/admin/api/jobs/${encodeURIComponent(id)}`)
        .then((reply) => jobs.set(id, reply.job.cpv))
        .catch(() => jobs.set(id, null))
        .finally(() => {
          jobFetching -= 1;
          while (jobs.size > JOB_CACHE) jobs.delete(/** @type {string} */ (jobs.keys().next().value));
          paintBase();
          renderRecord();
          if (marks.selected) renderPanel();
          pumpJobs();
        });
    }
  }

  /** @param {Drone} d */
  function jobText(d) {
    if (!d.current_job_id) return d.emerge_running ? "emerge running" : "idle";
    const cpv = jobs.get(d.current_job_id);
    return cpv ? `building ${cpv}` : `job ${d.current_job_id}`;
  }

  /** The sample rate that keeps heartbeat packets near the budget; the socket reopens when it changes. */
  function resample() {
    const perSecond = drones
      .filter((d) => d.connected)
      .reduce((sum, d) => sum + 1000 / Math.max(50, d.heartbeat_interval_ms || 1000), 0);
    const wanted = Math.max(1, Math.ceil(perSecond / HEARTBEAT_BUDGET));
    if (wanted === sample || performance.now() - sampleSetAt < RESAMPLE_AFTER_MS) return;
    sample = wanted;
    sampleSetAt = performance.now();
    setData("sample", String(sample));
    sampleNote.hidden = sample === 1;
    sampleNote.textContent = `Showing every ${ordinal(sample)} heartbeat of each drone`;
    protocolSocket.restart();
  }

  // -- the live streams ---------------------------------------------------------

  const protocolSocket = liveSocket(() => `/ws/protocol?sample=${sample}`, {
    onMessage: onProtocol,
    // The controller could not send them as fast as they came.
    onGap: (gap) => {
      traffic.counts.dropped += gap.dropped;
    },
    onState: connectionChanged,
  });
  const eventSocket = liveSocket(() => "/ws/events", {
    onMessage: onEvent,
    onGap: () => activity.refresh(), // the recent events again, from the controller
    onState: connectionChanged,
  });

  function connectionChanged() {
    live.classList.toggle("stale", !(protocolSocket.live && eventSocket.live));
    renderLive();
  }

  function renderLive() {
    if (!(protocolSocket.live && eventSocket.live)) {
      live.textContent = "Reconnecting to the live streams…";
      return;
    }
    const seconds = (performance.now() - windowStart) / 1000;
    const rate = windowPackets / Math.max(1, seconds);
    live.textContent = seconds < 1 ? "Live" : `Live · ${rate.toFixed(rate < 10 ? 1 : 0)} messages/s`;
  }

  /** @param {ProtocolEntry} entry */
  function onProtocol(entry) {
    windowPackets += 1;
    if (!scene?.nodes.has(entry.drone_id)) {
      if (entry.drone_id) fleet.poke();
      return;
    }
    const kind = PROTOCOL_KINDS.has(entry.type) ? entry.type : "control";
    launch(entry.drone_id, kind, entry.direction === "in", entry.seq, entry.type);
    if (entry.type === "hello" || entry.type === "start_build") fleet.poke();
  }

  /** @param {SwarmEvent} event */
  function onEvent(event) {
    activity.add(event);
    if (!event.drone_id) return;
    const kind = EVENT_KINDS[event.type];
    if (kind && scene?.nodes.has(event.drone_id)) launch(event.drone_id, kind, true, null, event.type, event.id);
    const next = event.data?.new_status;
    if (next || event.type.startsWith("drone_") || kind) {
      const colour = STATES[next]?.color ?? (kind ? KINDS[kind].color : null);
      if (colour) pulse(event.drone_id, colour, 1.6);
      record.event(event.drone_id, event.type, event.id);
      fleet.poke();
    }
  }

  // -- packets ------------------------------------------------------------------

  /**
   * A packet for a drone; `inbound`: drone -> controller. Recorded in the DOM when drawn.
   * @param {string} droneId  @param {string} kind  @param {boolean} inbound
   * @param {number | null} seq  @param {string} type  @param {number | null} [eventId]
   */
  function launch(droneId, kind, inbound, seq, type, eventId = null) {
    if (!scene || !traffic.launch(scene, droneId, kind, inbound, performance.now())) return;
    record.packet(droneId, type, seq, eventId);
    animate();
  }

  /** @param {string} droneId  @param {string} colour  @param {number} [strength] */
  function pulse(droneId, colour, strength = 1) {
    if (!scene?.nodes.has(droneId)) return;
    traffic.pulse(droneId, colour, performance.now(), strength);
    animate();
  }

  function animate() {
    if (frame === null && active && painter.width > 0) frame = window.requestAnimationFrame(tick);
  }

  /** @param {number} now */
  function tick(now) {
    frame = null;
    const moving = traffic.step(scene, now);
    paintFx(now);
    if (moving) frame = window.requestAnimationFrame(tick);
  }

  /** @param {number} now */
  function paintFx(now) {
    painter.paintFx(scene, traffic, marks, now);
    if (now - countersAt >= COUNTERS_MS || traffic.flight.length === 0) writeCounters(now);
  }

  /** One paint of the effects layer when nothing moves (hover, focus, selection). */
  function repaintFx() {
    if (frame === null) paintFx(performance.now());
  }

  /** A data- attribute of the stage, written only when it changes (it is read by tests, not styles). @param {string} name  @param {string} value */
  function setData(name, value) {
    if (written.get(name) === value) return;
    written.set(name, value);
    stage.dataset[name] = value;
  }

  /** @param {number} now */
  function writeCounters(now) {
    countersAt = now;
    const { counts } = traffic;
    setData("inFlight", String(traffic.flight.length));
    setData("packetsDrawn", String(counts.drawn));
    setData("packetsMerged", String(counts.merged));
    setData("packetsSkipped", String(counts.skipped));
    setData("packetsDropped", String(counts.dropped));
  }

  // -- painting -----------------------------------------------------------------

  function resize() {
    const rect = stage.getBoundingClientRect();
    if (!painter.resize(Math.round(rect.width), Math.round(rect.height), window.devicePixelRatio || 1)) return;
    relayout();
    renderRecord();
  }

  function relayout() {
    if (painter.width < 40 || painter.height < 40) {
      scene = null;
      return;
    }
    scene = layout(drones.slice(), painter.width, painter.height, legend.offsetHeight + 14);
    stage.dataset.layout = scene.cards ? "cards" : "dots";
    emptyNote.hidden = drones.length > 0;
    traffic.follow(scene);
    painter.invalidate();
    paintBase();
    repaintFx();
  }

  /** @param {Drone} d */
  function nodeKey(d) {
    return `${d.id}:${stateOf(d)}:${d.cores}:${d.load1}:${d.current_job_id}:${jobs.get(d.current_job_id ?? "") ?? ""}:${d.emerge_running}`;
  }

  function paintBase() {
    painter.paintBase(scene, drones, drones.map(nodeKey).join(";"));
  }

  // -- the record and the summary -------------------------------------------------

  /** @param {Drone} d */
  function describe(d) {
    const state = STATES[stateOf(d)].label.toLowerCase();
    const load = d.connected ? `, load ${d.load1.toFixed(2)}` : "";
    return `${d.name}: ${state}, ${plural(d.cores, "core")}${load}, ${jobText(d)}`;
  }

  function renderRecord(structure = false) {
    marks.focused = record.render(drones, scene, painter.drawnStates, describe, { structure, focused: marks.focused });
    setData("drones", String(drones.length));
  }

  function renderSummary() {
    const online = drones.filter((d) => d.status === "online");
    const cores = online.reduce((sum, d) => sum + d.cores, 0);
    const building = drones.filter((d) => d.current_job_id).length;
    const networks = groupsOf(drones.slice()).length;
    summary.textContent =
      `${plural(drones.length, "drone")} on ${plural(networks, "network")} · ${online.length} online · ` +
      `${plural(cores, "core")} ready · ${building} building`;
    renderLive();
    windowPackets = 0;
    windowStart = performance.now();
  }

  // -- the side panel -----------------------------------------------------------

  /** @param {string | null} id  @param {{focusPanel?: boolean}} [how] */
  function select(id, { focusPanel = false } = {}) {
    marks.selected = id;
    body.classList.toggle("with-panel", id !== null);
    panel.el.hidden = id === null;
    if (id !== null) renderPanel();
    // The stage changes size with the panel; the ResizeObserver lays out again.
    repaintFx();
    if (focusPanel && id !== null) panel.el.focus({ preventScroll: true });
  }

  function closePanel() {
    const was = marks.selected;
    select(null);
    const button = was && record.button(was);
    if (was && button) {
      focusDrone(was);
      button.focus({ preventScroll: true });
    }
  }

  function renderPanel() {
    panel.render(byId.get(marks.selected ?? ""), (id) => jobs.get(id));
  }

  // -- input ------------------------------------------------------------------

  /** @param {MouseEvent} event  @returns {[number, number]} */
  function local(event) {
    const rect = fx.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }

  /** @param {string | null} id */
  function showTip(id) {
    const node = id && scene?.nodes.get(id);
    if (!node || !scene || scene.cards) {
      tip.hidden = true;
      return;
    }
    tip.textContent = describe(node.drone);
    tip.hidden = false;
    const half = tip.offsetWidth / 2;
    const x = clamp(node.x, half + 6, painter.width - half - 6);
    const above = node.y - scene.dotR - 10 > 30;
    const y = above ? node.y - scene.dotR - 8 : node.y + scene.dotR + 8;
    tip.style.transform = `translate(${Math.round(x - half)}px, ${Math.round(y)}px) translateY(${above ? "-100%" : "0"})`;
  }

  fx.addEventListener("pointermove", (event) => {
    const id = nodeAt(scene, ...local(event));
    fx.style.cursor = id ? "pointer" : "default";
    if (id === marks.hover) return;
    marks.hover = id;
    showTip(marks.hover ?? marks.focused);
    repaintFx();
  });
  fx.addEventListener("pointerleave", () => {
    marks.hover = null;
    showTip(marks.focused);
    repaintFx();
  });
  fx.addEventListener("click", (event) => {
    const id = nodeAt(scene, ...local(event));
    if (id) {
      focusDrone(id);
      select(id);
    } else if (marks.selected) {
      select(null);
    }
  });

  /** @param {string} id */
  function focusDrone(id) {
    marks.focused = id;
    record.tabStop(id);
    showTip(id);
    repaintFx();
  }

  /** @param {Event} event  @returns {HTMLElement | null} */
  const droneItem = (event) => (event.target instanceof Element ? event.target.closest("li[data-drone-id]") : null);

  list.addEventListener("focusin", (event) => {
    const item = droneItem(event);
    if (item?.dataset.droneId) focusDrone(item.dataset.droneId);
    stage.classList.add("keyboard");
  });
  list.addEventListener("focusout", (event) => {
    if (event.relatedTarget instanceof Node && list.contains(event.relatedTarget)) return;
    stage.classList.remove("keyboard");
    marks.focused = null;
    showTip(marks.hover);
    repaintFx();
  });
  list.addEventListener("click", (event) => {
    const item = droneItem(event);
    if (item?.dataset.droneId) select(item.dataset.droneId, { focusPanel: false });
  });
  list.addEventListener("keydown", (event) => {
    const buttons = [...list.querySelectorAll("button")];
    const at = buttons.indexOf(/** @type {HTMLButtonElement} */ (document.activeElement));
    if (at < 0) return;
    /** @type {Record<string, number>} */
    const moves = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1, Home: -Infinity, End: Infinity };
    if (event.key === "Escape" && marks.selected) {
      event.preventDefault();
      select(null);
      return;
    }
    if (!(event.key in moves)) return;
    event.preventDefault();
    const move = moves[event.key];
    const next = Number.isFinite(move) ? at + move : move < 0 ? 0 : buttons.length - 1;
    buttons[clamp(next, 0, buttons.length - 1)].focus({ preventScroll: true });
  });

  const resizer = new ResizeObserver(() => {
    if (active) resize();
  });
  resizer.observe(stage);
  /** @type {MediaQueryList | null} */
  let dprQuery = null;
  function watchDpr() {
    // Dragged to a screen of another density: repaint sharp.
    dprQuery?.removeEventListener("change", onDpr);
    dprQuery = window.matchMedia(`(resolution: ${window.devicePixelRatio}dppx)`);
    dprQuery.addEventListener("change", onDpr);
  }
  function onDpr() {
    watchDpr();
    if (active) resize();
  }
  watchDpr();

  return {
    el: page,
    /** @param {Record<string, string>} [params] */
    show(params) {
      if (params?.drone) {
        ctx.settle("topology");
        const found = drones.find((d) => d.name === params.drone);
        if (found) select(found.id);
        else pendingSelect = params.drone;
      }
      if (active) return;
      active = true;
      resize();
      unsubscribe = fleet.subscribe(onFleet);
      eventSocket.start();
      activity.show();
    },
    hide() {
      active = false;
      unsubscribe?.();
      unsubscribe = null;
      if (frame !== null) window.cancelAnimationFrame(frame);
      frame = null;
      protocolSocket.stop();
      eventSocket.stop();
      activity.hide();
      traffic.clear();
    },
  };
}
