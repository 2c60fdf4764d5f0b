// Topology: the controller in the middle, the drones around it grouped by
// network, and the control-stream traffic travelling along the edges as it
// happens. Every packet is a real message: an entry of /ws/protocol
// (heartbeat, ping, pong, start_build, build_event, hello, open_channel...)
// or an event of /ws/events (a job done or failed on a drone, a change of
// state). Nothing moves without one.
//
// Drawing: two stacked canvases. The base layer (regions, edges, nodes) is
// painted when the fleet or the size changes; the effects layer (packets,
// pulses, hover and focus rings) is painted by requestAnimationFrame only
// while something moves and the page is shown. A big fleet stays smooth:
// heartbeats are sampled by the controller (/ws/protocol?sample=N, so about
// HEARTBEAT_BUDGET a second reach the page), a packet of the same kind to
// the same drone already on its way absorbs a new one, and at most
// MAX_IN_FLIGHT packets fly at once (heartbeats beyond that are skipped and
// counted; other kinds push out the oldest heartbeat).
//
// What the canvas shows is also in the DOM, for assistive technology and
// tests: a visually hidden list of the drones by network, each item with its
// state, its position on the canvas (data-x, data-y), the last packet drawn
// for it and the protocol seq that caused it (data-last-packet,
// data-last-packet-seq, data-last-heartbeat-seq, data-last-ping-seq, ...;
// events: data-last-event, data-last-event-id), and on the stage the
// packet counters (data-packets-drawn, -merged, -skipped, -dropped by the
// controller for a slow reader, data-in-flight).

import { ApiError, get, wsUrl } from "../api.js";
import { Waveform } from "/common/waveform.js";

const POLL_MS = 3000;
const MAX_IN_FLIGHT = 200;
const MAX_PULSES = 60;
const HEARTBEAT_BUDGET = 40; // heartbeat packets a second the page asks the controller for at most
// Routine packets drawn a second at most, per kind of routine: heartbeats
// (already sampled near HEARTBEAT_BUDGET by the controller) and proof-of-life
// pings and pongs (a big fleet's are hundreds a second). Beyond it they are
// skipped and counted; work, builds, completions and control always fly.
const ROUTINE_RATES = { heartbeat: 50, ping: 15, pong: 15 };
const ROUTINE = new Set(Object.keys(ROUTINE_RATES));
const BIG_FLEET = 60; // drones: from here on, no ring for every ping that arrives
const COUNTERS_MS = 500; // the stage's packet counters are written this often
const RESAMPLE_AFTER_MS = 10_000; // a new sample rate waits this long after the last one
const JOB_CACHE = 512;
const JOB_FETCHES = 3; // job lookups at once
const RECENT_EVENTS = 30;
const MOMENT_EVENTS = 50;
const SOCKET_RETRY_MS = [1000, 2000, 5000, 10_000];

const CARD_W = 172;
const CARD_H = 64;
const MAX_CARDS = 40;
const REGION_HEAD = 30;
const MARGIN = 16;

// Packet kinds: what the legend says and how each looks.
const KINDS = {
  heartbeat: { label: "Heartbeat", detail: "drone → controller", color: "#3ecf8e", r: 2.6 },
  ping: { label: "Ping", detail: "controller → drone", color: "#5aa9ff", r: 3 },
  pong: { label: "Pong", detail: "drone → controller", color: "#a8d1ff", r: 3 },
  start_build: { label: "Work assignment", detail: "start_build", color: "#a594ff", r: 4.2, burst: true },
  build_event: { label: "Build progress", detail: "build_event", color: "#f0b13c", r: 3.4 },
  job_done: { label: "Completion", detail: "job done", color: "#ff7ad9", r: 4.6, burst: true },
  job_failed: { label: "Failure", detail: "job failed on a drone", color: "#ff6b6b", r: 4.6, burst: true },
  control: { label: "Control", detail: "hello, welcome, channels, restarts", color: "#c3c9d6", r: 3 },
};
const PROTOCOL_KINDS = new Set(["heartbeat", "ping", "pong", "start_build", "build_event"]);
const EVENT_KINDS = { job_done: "job_done", job_failed_on_drone: "job_failed" };

const STATES = {
  online: { label: "Online", color: "#3ecf8e" },
  suspect: { label: "Suspect", color: "#f0b13c" },
  unhealthy: { label: "Unhealthy", color: "#ff6b6b" },
  grounded: { label: "Grounded", color: "#ff9f5a" },
  draining: { label: "Draining", color: "#5aa9ff" },
  offline: { label: "Offline", color: "#5d667a" },
};
const NETWORK_ORDER = ["lan", "tailscale"];
const NETWORK_NAMES = { lan: "LAN", tailscale: "Tailscale", "": "Unknown network" };

const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");
let motionless = reducedMotion.matches;
reducedMotion.addEventListener("change", () => {
  motionless = reducedMotion.matches;
});

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "swatch") node.style.setProperty("--swatch", value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children);
  return node;
}

/** "#rrggbb" with an alpha, for canvas gradients. */
function rgba(hex, alpha) {
  const n = Number.parseInt(hex.slice(1), 16);
  return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

function ordinal(n) {
  const teen = n % 100 >= 11 && n % 100 <= 13;
  return `${n}${teen ? "th" : ["th", "st", "nd", "rd"][n % 10] ?? "th"}`;
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
const networkName = (network) => NETWORK_NAMES[network] ?? network;
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const easeInOut = (t) => (t < 0.5 ? 2 * t * t : 1 - (-2 * t + 2) ** 2 / 2);

/** online, suspect, unhealthy, offline from the fleet; grounded and draining from dispatch. */
function stateOf(drone) {
  if (drone.status !== "online") return drone.status in STATES ? drone.status : "offline";
  if (drone.dispatch?.grounded) return "grounded";
  if (drone.dispatch?.draining) return "draining";
  return "online";
}

function ago(iso, now) {
  if (!iso) return "never";
  const seconds = Math.max(0, (now - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

function timeOf(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function truncate(ctx, text, width) {
  if (ctx.measureText(text).width <= width) return text;
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (ctx.measureText(`${text.slice(0, mid)}…`).width <= width) lo = mid;
    else hi = mid - 1;
  }
  return `${text.slice(0, lo)}…`;
}

function roundRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  ctx.roundRect(x, y, w, h, r);
}

// -- layout -------------------------------------------------------------------

/** Groups of drones by network: LAN, Tailscale, then the others by name. */
function groupsOf(drones) {
  const byNetwork = new Map();
  for (const d of drones) {
    const key = d.network || "";
    if (!byNetwork.has(key)) byNetwork.set(key, []);
    byNetwork.get(key).push(d);
  }
  const rank = (n) => (NETWORK_ORDER.includes(n) ? NETWORK_ORDER.indexOf(n) : NETWORK_ORDER.length);
  return [...byNetwork.entries()]
    .sort(([a], [b]) => rank(a) - rank(b) || (a === "") - (b === "") || a.localeCompare(b))
    .map(([network, list]) => ({ network, drones: list.sort((a, b) => a.name.localeCompare(b.name)) }));
}

/** The largest square cell such that n of them fit in w x h. */
function cellFor(n, w, h) {
  let lo = 2;
  let hi = Math.max(2, Math.min(w, h));
  while (hi - lo > 0.5) {
    const s = (lo + hi) / 2;
    if (Math.floor(w / s) * Math.floor(h / s) >= n) lo = s;
    else hi = s;
  }
  return lo;
}

/**
 * Where everything goes: the controller in a column of its own, the network
 * groups as regions on its left and right (LAN left, Tailscale right, others
 * to the lighter side), each drone a card (small fleets) or a dot.
 */
function layout(drones, width, fullHeight, reserve) {
  const height = Math.max(120, fullHeight - reserve); // the legend's strip stays clear
  const groups = groupsOf(drones);
  const sides = { left: [], right: [] };
  const weight = (list) => list.reduce((sum, g) => sum + g.drones.length, 0);
  groups.forEach((g, i) => {
    if (i === 0) sides.left.push(g);
    else if (i === 1) sides.right.push(g);
    else (weight(sides.left) <= weight(sides.right) ? sides.left : sides.right).push(g);
  });
  // Groups on both sides: [left | controller | right]; one group only (the
  // first always goes left): [controller | group]; no drone: the controller alone.
  const both = sides.right.length > 0;
  const ctlW = clamp(width * 0.2, 150, 260);
  const sideW = both ? (width - ctlW) / 2 : width - ctlW;
  const ctlX = both ? sideW + ctlW / 2 : sides.left.length ? ctlW / 2 : width / 2;
  const sideX = { left: both ? 0 : ctlW, right: sideW + ctlW };
  const controller = { x: ctlX, y: height / 2, r: clamp(Math.min(ctlW, height) * 0.19, 26, 40) };

  const regions = [];
  for (const [side, list] of Object.entries(sides)) {
    if (!list.length) continue;
    const x = sideX[side] + MARGIN;
    const w = sideW - 2 * MARGIN;
    const usable = height - MARGIN * 2 - 12 * (list.length - 1);
    const total = list.reduce((sum, g) => sum + g.drones.length + 3, 0);
    let y = MARGIN;
    for (const g of list) {
      const h = Math.max(REGION_HEAD + 30, (usable * (g.drones.length + 3)) / total);
      regions.push({ ...g, side, x, y, w, h });
      y += h + 12;
    }
  }

  // Cards if every region holds its drones as cards, else dots.
  const inner = (r) => ({ w: r.w - 20, h: r.h - REGION_HEAD - 10 });
  const cards =
    drones.length <= MAX_CARDS &&
    regions.every((r) => {
      const { w, h } = inner(r);
      return Math.floor(w / (CARD_W + 14)) * Math.floor(h / (CARD_H + 12)) >= r.drones.length;
    });

  const nodes = new Map();
  let dotR = 0;
  let cell = 0;
  if (!cards) {
    cell = Math.min(...regions.map((r) => cellFor(r.drones.length, inner(r).w, inner(r).h)));
    dotR = clamp(cell * 0.32, 2.5, 14);
  }
  for (const r of regions) {
    const { w, h } = inner(r);
    const cw = cards ? CARD_W + 14 : cell;
    const ch = cards ? CARD_H + 12 : cell;
    const fit = Math.max(1, Math.floor(w / cw));
    const n = r.drones.length;
    // Few cards: as square a block as fits, rather than one long row.
    const cols = cards ? Math.min(fit, Math.max(1, Math.ceil(Math.sqrt(n * 1.5)))) : Math.min(fit, n);
    const rows = Math.ceil(n / cols);
    const gx = r.x + 10 + (w - cols * cw) / 2;
    const gy = r.y + REGION_HEAD + (h - rows * ch) / 2;
    r.drones.forEach((d, i) => {
      const col = i % cols;
      const row = Math.floor(i / cols);
      // The last row centred under the others.
      const inRow = row === rows - 1 ? n - row * cols : cols;
      const shift = ((cols - inRow) * cw) / 2;
      const x = gx + shift + col * cw + cw / 2;
      const y = gy + row * ch + ch / 2;
      // The edge meets a card on the side facing the controller.
      const ax = cards ? x + (x < controller.x ? CARD_W / 2 : -CARD_W / 2) : x;
      nodes.set(d.id, { drone: d, x, y, ax, ay: y, region: r });
    });
  }
  return { width, height: fullHeight, controller, regions, nodes, cards, dotR, cell };
}

// -- the page -----------------------------------------------------------------

export function create(ctx) {
  // The stage: two canvases and the accessible record of what they show.
  const base = el("canvas", { class: "topo-canvas", "aria-hidden": "true" });
  const fx = el("canvas", { class: "topo-canvas topo-fx", "aria-hidden": "true" });
  const tip = el("div", { class: "topo-tip", hidden: true, "aria-hidden": "true" });
  const list = el("ul", { class: "topo-list visually-hidden", "aria-label": "Drones by network" });
  const emptyNote = el(
    "div",
    { class: "topo-empty", hidden: true },
    el("strong", {}, "No drone has connected yet."),
    el("span", {}, "Create a join token (POST /admin/api/tokens) and run the enroll command it returns on a drone."),
  );
  const legend = el("ul", { class: "topo-legend", "aria-label": "Legend" });
  const sampleNote = el("li", { class: "topo-legend-note", hidden: true });
  for (const [kind, k] of Object.entries(KINDS)) {
    legend.append(
      el(
        "li",
        { "data-kind": kind, title: k.detail },
        el("span", { class: "topo-swatch", swatch: k.color }),
        `${k.label}`,
      ),
    );
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

  const panel = el("aside", { class: "topo-panel", hidden: true, "aria-labelledby": "topo-panel-title", tabindex: "-1" });
  const summary = el("p", { class: "page-sub" }, "Loading…");
  const live = el("span", { class: "live stale", "aria-live": "polite" }, "Connecting…");
  const problem = el("div", { class: "banner banner-error", role: "alert", hidden: true });

  const waveHost = el("div", { class: "topo-wave" });
  const momentTitle = el("h3", { id: "topo-moment-title" }, "Recent events");
  const momentNote = el("span", { class: "muted" }, "live");
  const momentList = el("ol", { class: "topo-events", "aria-labelledby": "topo-moment-title", "data-moment": "" });
  const activity = el(
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
    el("div", { class: "topo-moment" }, el("div", { class: "topo-activity-head" }, momentTitle, momentNote), momentList),
  );

  const body = el("div", { class: "topo-body" }, stage, panel);
  const page = el(
    "section",
    { class: "page page-fill topo", "aria-labelledby": "topology-title" },
    el(
      "header",
      { class: "page-head" },
      el("div", {}, el("h1", { id: "topology-title" }, "Topology"), summary),
      live,
    ),
    problem,
    body,
    activity,
  );

  // -- state --------------------------------------------------------------------

  let active = false;
  let rounds = 0;
  let pollTimer = null;
  let drones = [];
  const byId = new Map(); // drone id -> drone JSON
  const items = new Map(); // drone id -> its <li> in the record
  let scene = null; // layout()
  let sceneKey = "";
  let baseKey = "";
  let width = 0;
  let height = 0;
  let dpr = window.devicePixelRatio || 1;
  let flight = []; // packets on their way
  let pulses = []; // rings at nodes
  let ctlGlow = 0;
  let frame = null;
  let hover = null; // drone id
  let focused = null;
  let selected = null;
  const counts = { drawn: 0, merged: 0, skipped: 0, dropped: 0 };
  let windowPackets = 0;
  let windowStart = performance.now();
  let sample = 1;
  let sampleSetAt = -Infinity;
  let refreshSoon = null;
  const jobs = new Map(); // job id -> cpv, or null when it cannot be known
  const jobQueue = [];
  let jobFetching = 0;
  let colours = null;
  let pendingSelect = null; // a drone name from #/topology?drone=, before the fleet is loaded
  const written = new Map(); // stage data- attributes as last written
  const drawnStates = new Map(); // drone id -> the state its node shows on the canvas

  // -- data ---------------------------------------------------------------------

  function setProblem(message) {
    problem.textContent = message ?? "";
    problem.hidden = !message;
  }

  async function poll(round) {
    pollTimer = null;
    try {
      const reply = await get("/admin/api/drones");
      if (!active || round !== rounds) return;
      setProblem(null);
      accept(reply.drones);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      setProblem(`Could not load the drones: ${error.message}`);
      live.classList.add("stale");
    }
    if (active && round === rounds) pollTimer = window.setTimeout(poll, POLL_MS, round);
  }

  /** A drone we have not seen, or a change of state: ask again soon, at most every second. */
  function refreshDrones() {
    if (refreshSoon !== null || !active) return;
    refreshSoon = window.setTimeout(async () => {
      try {
        const reply = await get("/admin/api/drones");
        if (active) accept(reply.drones);
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
      } finally {
        window.setTimeout(() => {
          refreshSoon = null;
        }, 1000);
      }
    }, 150);
  }

  function accept(fleet) {
    drones = fleet;
    byId.clear();
    for (const d of fleet) byId.set(d.id, d);
    for (const d of fleet) {
      if (d.current_job_id && !jobs.has(d.current_job_id)) lookUpJob(d.current_job_id);
    }
    const key = groupsOf(fleet.slice())
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
      const found = fleet.find((d) => d.name === pendingSelect);
      pendingSelect = null;
      if (found) select(found.id);
    }
    if (selected) renderPanel();
    resample();
    // The protocol stream opens once the fleet's size says how to sample it.
    if (active && !protocolSocket.open) protocolSocket.start();
  }

  function lookUpJob(id) {
    jobs.set(id, undefined); // asked for
    jobQueue.push(id);
    pumpJobs();
  }

  function pumpJobs() {
    while (jobFetching < JOB_FETCHES && jobQueue.length) {
      const id = jobQueue.shift();
      jobFetching += 1;
      get(`/admin/api/jobs/${encodeURIComponent(id)}`)
        .then((reply) => jobs.set(id, reply.job.cpv))
        .catch(() => jobs.set(id, null))
        .finally(() => {
          jobFetching -= 1;
          while (jobs.size > JOB_CACHE) jobs.delete(jobs.keys().next().value);
          paintBase();
          renderRecord();
          if (selected) renderPanel();
          pumpJobs();
        });
    }
  }

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
    if (protocolSocket.open) protocolSocket.restart();
  }

  // -- sockets ------------------------------------------------------------------

  class Socket {
    constructor(path, onMessage) {
      this.path = path;
      this.onMessage = onMessage;
      this.ws = null;
      this.retry = 0;
      this.timer = null;
      this.open = false;
    }

    start() {
      this.open = true;
      this.connect();
    }

    connect() {
      this.timer = null;
      const ws = new WebSocket(wsUrl(this.path()));
      this.ws = ws;
      ws.onopen = () => {
        this.retry = 0;
        connectionChanged();
      };
      ws.onmessage = (message) => {
        let item;
        try {
          item = JSON.parse(message.data);
        } catch {
          return;
        }
        this.onMessage(item);
      };
      ws.onclose = (event) => {
        if (this.ws !== ws) return;
        this.ws = null;
        connectionChanged();
        if (!this.open) return;
        // 1008: the session ended; any API call now goes to the login page.
        if (event.code === 1008) get("/admin/api/session").catch(() => {});
        const wait = SOCKET_RETRY_MS[Math.min(this.retry, SOCKET_RETRY_MS.length - 1)];
        this.retry += 1;
        this.timer = window.setTimeout(() => this.connect(), wait);
      };
    }

    restart() {
      this.stop();
      this.start();
    }

    stop() {
      this.open = false;
      if (this.timer !== null) window.clearTimeout(this.timer);
      this.timer = null;
      const ws = this.ws;
      this.ws = null;
      if (ws) ws.close(1000);
    }

    get live() {
      return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
    }
  }

  const protocolSocket = new Socket(() => `/ws/protocol?sample=${sample}`, onProtocol);
  const eventSocket = new Socket(() => "/ws/events", onEvent);

  function connectionChanged() {
    const up = protocolSocket.live && eventSocket.live;
    live.classList.toggle("stale", !up);
    renderLive();
  }

  function renderLive() {
    const up = protocolSocket.live && eventSocket.live;
    if (!up) {
      live.textContent = "Reconnecting to the live streams…";
      return;
    }
    const seconds = (performance.now() - windowStart) / 1000;
    const rate = windowPackets / Math.max(1, seconds);
    live.textContent = seconds < 1 ? "Live" : `Live · ${rate.toFixed(rate < 10 ? 1 : 0)} messages/s`;
  }

  function onProtocol(entry) {
    if ("dropped" in entry) {
      counts.dropped += entry.dropped; // the controller could not send them as fast as they came
      return;
    }
    windowPackets += 1;
    const node = scene?.nodes.get(entry.drone_id);
    if (!node) {
      if (entry.drone_id) refreshDrones();
      return;
    }
    const kind = PROTOCOL_KINDS.has(entry.type) ? entry.type : "control";
    launch(entry.drone_id, kind, entry.direction === "in", entry.seq, entry.type);
    if (entry.type === "hello" || entry.type === "start_build") refreshDrones();
  }

  function onEvent(event) {
    if ("dropped" in event) return;
    addRecent(event);
    if (!event.drone_id) return;
    const kind = EVENT_KINDS[event.type];
    if (kind && scene?.nodes.has(event.drone_id)) {
      launch(event.drone_id, kind, true, null, event.type, event.id);
    }
    const next = event.data?.new_status;
    if (next || event.type.startsWith("drone_") || kind) {
      const colour = STATES[next]?.color ?? (kind ? KINDS[kind].color : null);
      if (colour) pulse(event.drone_id, colour, 1.6);
      recordEvent(event);
      refreshDrones();
    }
  }

  // -- packets ------------------------------------------------------------------

  /** A packet for a drone; ``inbound``: drone -> controller. Records it in the DOM when drawn. */
  function launch(droneId, kind, inbound, seq, type, eventId = null) {
    const now = performance.now();
    const same = flight.find((p) => p.droneId === droneId && p.kind === kind && p.inbound === inbound && now - p.born < p.duration / 2);
    if (same) {
      same.count += 1;
      counts.merged += 1;
    } else {
      if (ROUTINE.has(kind) && !takeToken(kind, now)) {
        counts.skipped += 1;
        return;
      }
      if (flight.length >= MAX_IN_FLIGHT) {
        const oldest = ROUTINE.has(kind) ? -1 : flight.findIndex((p) => ROUTINE.has(p.kind));
        if (oldest < 0) {
          counts.skipped += 1;
          return;
        }
        flight.splice(oldest, 1);
      }
      const packet = { droneId, kind, inbound, born: now, duration: 0, count: 1, x0: 0, y0: 0, x1: 0, y1: 0 };
      place(packet);
      flight.push(packet);
      counts.drawn += 1;
    }
    record(droneId, type, kind, seq, eventId);
    animate();
  }

  /** A packet's path: from the controller's rim to the drone's end of the edge, or back. */
  function place(p) {
    const node = scene.nodes.get(p.droneId);
    const ctl = scene.controller;
    const dx = node.ax - ctl.x;
    const dy = node.ay - ctl.y;
    const len = Math.hypot(dx, dy) || 1;
    const rim = [ctl.x + (dx / len) * ctl.r, ctl.y + (dy / len) * ctl.r];
    const end = [node.ax, node.ay];
    [[p.x0, p.y0], [p.x1, p.y1]] = p.inbound ? [end, rim] : [rim, end];
    p.duration = motionless ? 700 : clamp(len * 2.2, 550, 1400);
  }

  // A token bucket per routine kind: a second's worth at most.
  const buckets = Object.fromEntries(Object.entries(ROUTINE_RATES).map(([kind, rate]) => [kind, { rate, tokens: rate, at: 0 }]));
  function takeToken(kind, now) {
    const b = buckets[kind];
    b.tokens = Math.min(b.rate, b.tokens + ((now - b.at) / 1000) * b.rate);
    b.at = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  function record(droneId, type, kind, seq, eventId) {
    const item = items.get(droneId);
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
    if (eventId !== null) {
      data.lastEvent = type;
      data.lastEventId = String(eventId);
    }
  }

  function recordEvent(event) {
    const item = items.get(event.drone_id);
    if (!item) return;
    item.dataset.lastEvent = event.type;
    item.dataset.lastEventId = String(event.id);
  }

  function pulse(droneId, colour, strength = 1) {
    if (!scene?.nodes.has(droneId)) return;
    if (pulses.length >= MAX_PULSES) pulses.shift();
    pulses.push({ droneId, colour, born: performance.now(), duration: 900 * strength });
    animate();
  }

  function animate() {
    if (frame === null && active && width > 0) frame = window.requestAnimationFrame(tick);
  }

  function tick(now) {
    frame = null;
    const arrived = [];
    flight = flight.filter((p) => {
      if (now - p.born < p.duration) return true;
      arrived.push(p);
      return false;
    });
    const big = scene !== null && scene.nodes.size >= BIG_FLEET;
    for (const p of arrived) {
      // What reaches the controller makes it glow; what reaches a drone rings it.
      if (p.inbound) ctlGlow = Math.min(1, ctlGlow + (p.kind === "heartbeat" ? 0.04 : 0.12));
      else if (KINDS[p.kind].burst || (p.kind === "ping" && !big)) pulse(p.droneId, KINDS[p.kind].color);
    }
    pulses = pulses.filter((p) => now - p.born < p.duration);
    ctlGlow *= 0.94;
    if (ctlGlow < 0.01) ctlGlow = 0;
    paintFx(now);
    if (flight.length || pulses.length || ctlGlow > 0) frame = window.requestAnimationFrame(tick);
  }

  /** A data- attribute of the stage, written only when it changes (it is read by tests, not styles). */
  function setData(name, value) {
    if (written.get(name) === value) return;
    written.set(name, value);
    stage.dataset[name] = value;
  }

  /** One paint of the effects layer when nothing moves (hover, focus, selection). */
  function repaintFx() {
    if (frame === null) paintFx(performance.now());
  }

  // -- painting -----------------------------------------------------------------

  function readColours() {
    const css = getComputedStyle(page);
    const v = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    return {
      text: v("--text", "#e6e9f0"),
      muted: v("--muted", "#8a93a6"),
      faint: v("--faint", "#5d667a"),
      surface: v("--surface", "#131823"),
      surface2: v("--surface-2", "#1a2030"),
      border: v("--border", "#242b3b"),
      strong: v("--border-strong", "#313a4f"),
      accent: v("--accent", "#8f7cf7"),
      font: getComputedStyle(document.body).fontFamily,
    };
  }

  function resize() {
    const rect = stage.getBoundingClientRect();
    const w = Math.round(rect.width);
    const h = Math.round(rect.height);
    const ratio = window.devicePixelRatio || 1;
    if (w === width && h === height && ratio === dpr) return;
    width = w;
    height = h;
    dpr = ratio;
    for (const canvas of [base, fx]) {
      canvas.width = Math.max(1, Math.round(w * dpr));
      canvas.height = Math.max(1, Math.round(h * dpr));
    }
    relayout();
    renderRecord();
  }

  function relayout() {
    if (width < 40 || height < 40) {
      scene = null;
      return;
    }
    scene = layout(drones.slice(), width, height, legend.offsetHeight + 14);
    stage.dataset.layout = scene.cards ? "cards" : "dots";
    emptyNote.hidden = drones.length > 0;
    // Packets in flight follow their drone; those of a drone that left go.
    flight = flight.filter((p) => scene.nodes.has(p.droneId));
    for (const p of flight) place(p);
    baseKey = "";
    paintBase();
    repaintFx();
  }

  function nodeKey(d) {
    return `${d.id}:${stateOf(d)}:${d.cores}:${d.load[0]}:${d.current_job_id}:${jobs.get(d.current_job_id) ?? ""}:${d.emerge_running}`;
  }

  function paintBase() {
    if (!scene) return;
    const key = `${width}x${height}@${dpr}|${drones.map(nodeKey).join(";")}`;
    if (key === baseKey) return;
    baseKey = key;
    colours ??= readColours();
    const c = colours;
    const g = base.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, width, height);
    const { controller: ctl } = scene;

    // Regions, with their network and counts.
    for (const r of scene.regions) {
      roundRect(g, r.x, r.y, r.w, r.h, 12);
      g.fillStyle = "rgba(255, 255, 255, 0.018)";
      g.fill();
      g.strokeStyle = c.border;
      g.lineWidth = 1;
      g.setLineDash([4, 4]);
      g.stroke();
      g.setLineDash([]);
      const online = r.drones.filter((d) => d.status === "online").length;
      g.font = `600 12px ${c.font}`;
      g.textBaseline = "middle";
      g.textAlign = "left";
      g.fillStyle = c.text;
      const title = networkName(r.network).toUpperCase();
      g.fillText(title, r.x + 12, r.y + REGION_HEAD / 2 + 1);
      const tw = g.measureText(title).width;
      g.font = `12px ${c.font}`;
      g.fillStyle = c.muted;
      g.fillText(`${plural(r.drones.length, "drone")} · ${online} online`, r.x + 20 + tw, r.y + REGION_HEAD / 2 + 1);
    }

    // Edges: faint for a big fleet, a line per drone for a small one.
    const many = scene.nodes.size > 60;
    g.lineWidth = many ? 0.6 : 1.2;
    for (const node of scene.nodes.values()) {
      const state = stateOf(node.drone);
      g.strokeStyle = state === "offline" ? "rgba(93, 102, 122, 0.25)" : many ? "rgba(143, 124, 247, 0.10)" : "rgba(143, 124, 247, 0.32)";
      if (state === "offline") g.setLineDash([3, 5]);
      g.beginPath();
      g.moveTo(ctl.x, ctl.y);
      g.lineTo(node.ax, node.ay);
      g.stroke();
      g.setLineDash([]);
    }

    // The controller.
    const halo = g.createRadialGradient(ctl.x, ctl.y, ctl.r * 0.6, ctl.x, ctl.y, ctl.r * 2.2);
    halo.addColorStop(0, "rgba(143, 124, 247, 0.28)");
    halo.addColorStop(1, "rgba(143, 124, 247, 0)");
    g.fillStyle = halo;
    g.beginPath();
    g.arc(ctl.x, ctl.y, ctl.r * 2.2, 0, Math.PI * 2);
    g.fill();
    g.beginPath();
    g.arc(ctl.x, ctl.y, ctl.r, 0, Math.PI * 2);
    g.fillStyle = c.surface2;
    g.fill();
    g.lineWidth = 2;
    g.strokeStyle = c.accent;
    g.stroke();
    drawHexagon(g, ctl.x, ctl.y, ctl.r * 0.42, c.accent);
    g.textAlign = "center";
    g.textBaseline = "top";
    g.font = `600 13px ${c.font}`;
    g.fillStyle = c.text;
    g.fillText("Controller", ctl.x, ctl.y + ctl.r + 10);
    const online = drones.filter((d) => d.status === "online");
    g.font = `12px ${c.font}`;
    g.fillStyle = c.muted;
    g.fillText(`${online.length} of ${drones.length} online`, ctl.x, ctl.y + ctl.r + 28);

    // The drones.
    drawnStates.clear();
    for (const node of scene.nodes.values()) {
      if (scene.cards) drawCard(g, node, c);
      else drawDot(g, node, c);
      drawnStates.set(node.drone.id, stateOf(node.drone));
    }
  }

  function drawHexagon(g, x, y, r, colour) {
    g.beginPath();
    for (let i = 0; i < 6; i++) {
      const a = Math.PI / 6 + (i * Math.PI) / 3;
      g[i ? "lineTo" : "moveTo"](x + r * Math.cos(a), y + r * Math.sin(a));
    }
    g.closePath();
    g.lineWidth = 1.8;
    g.strokeStyle = colour;
    g.stroke();
    g.beginPath();
    g.arc(x, y, r * 0.32, 0, Math.PI * 2);
    g.fillStyle = colour;
    g.fill();
  }

  function drawCard(g, node, c) {
    const d = node.drone;
    const state = stateOf(d);
    const colour = STATES[state].color;
    const x = node.x - CARD_W / 2;
    const y = node.y - CARD_H / 2;
    g.globalAlpha = state === "offline" ? 0.6 : 1;
    roundRect(g, x, y, CARD_W, CARD_H, 9);
    g.fillStyle = c.surface2;
    g.fill();
    g.lineWidth = 1;
    g.strokeStyle = c.strong;
    g.stroke();
    // The state as a stripe down the left edge.
    g.save();
    roundRect(g, x, y, CARD_W, CARD_H, 9);
    g.clip();
    g.fillStyle = colour;
    g.fillRect(x, y, 3, CARD_H);
    // Load against cores, as a bar along the bottom.
    const load = d.connected ? clamp(d.load[0] / Math.max(1, d.cores), 0, 1) : 0;
    g.fillStyle = "rgba(255, 255, 255, 0.06)";
    g.fillRect(x, y + CARD_H - 3, CARD_W, 3);
    g.fillStyle = load > 0.9 ? "#f0b13c" : "rgba(143, 124, 247, 0.85)";
    g.fillRect(x, y + CARD_H - 3, CARD_W * load, 3);
    g.restore();

    g.textAlign = "left";
    g.textBaseline = "alphabetic";
    g.font = `600 12.5px ${c.font}`;
    g.fillStyle = c.text;
    const stateText = STATES[state].label.toLowerCase();
    g.font = `600 11px ${c.font}`;
    const sw = g.measureText(stateText).width;
    g.font = `600 12.5px ${c.font}`;
    g.fillText(truncate(g, d.name, CARD_W - sw - 34), x + 12, y + 19);
    g.font = `600 11px ${c.font}`;
    g.fillStyle = colour;
    g.textAlign = "right";
    g.fillText(stateText, x + CARD_W - 10, y + 19);
    g.beginPath();
    g.arc(x + CARD_W - 16 - sw, y + 15, 3, 0, Math.PI * 2);
    g.fill();
    g.textAlign = "left";
    g.font = `12px ${c.font}`;
    g.fillStyle = c.muted;
    const loadText = d.connected ? `load ${d.load[0].toFixed(2)}` : "load –";
    g.fillText(`${plural(d.cores, "core")} · ${loadText}`, x + 12, y + 37);
    const job = jobText(d);
    g.fillStyle = d.current_job_id ? "#c9bfff" : c.faint;
    g.fillText(truncate(g, job, CARD_W - 24), x + 12, y + 54);
    g.globalAlpha = 1;
  }

  function drawDot(g, node, c) {
    const d = node.drone;
    const state = stateOf(d);
    const colour = STATES[state].color;
    const r = scene.dotR;
    g.beginPath();
    g.arc(node.x, node.y, r, 0, Math.PI * 2);
    g.fillStyle = state === "offline" ? c.surface2 : colour;
    g.globalAlpha = state === "offline" ? 1 : 0.9;
    g.fill();
    g.globalAlpha = 1;
    if (state === "offline") {
      g.lineWidth = 1;
      g.strokeStyle = colour;
      g.stroke();
    }
    // Building: a dark core; load: an arc around the node.
    if (d.current_job_id || d.emerge_running) {
      g.beginPath();
      g.arc(node.x, node.y, r * 0.42, 0, Math.PI * 2);
      g.fillStyle = c.surface;
      g.fill();
    }
    if (r >= 5 && d.connected) {
      const load = clamp(d.load[0] / Math.max(1, d.cores), 0, 1);
      if (load > 0) {
        g.beginPath();
        g.arc(node.x, node.y, r + 2.5, -Math.PI / 2, -Math.PI / 2 + load * Math.PI * 2);
        g.lineWidth = 1.5;
        g.strokeStyle = load > 0.9 ? "#f0b13c" : "rgba(200, 190, 255, 0.8)";
        g.stroke();
      }
    }
    if (scene.cell >= 46) {
      g.font = `11px ${c.font}`;
      g.textAlign = "center";
      g.textBaseline = "top";
      g.fillStyle = c.muted;
      g.fillText(truncate(g, d.name, scene.cell - 6), node.x, node.y + r + 5);
    }
  }

  /** A packet's glow, drawn once per kind and size (and screen density) and then only copied. */
  const sprites = new Map();
  function sprite(kind) {
    const key = `${kind}@${dpr}`;
    let found = sprites.get(key);
    if (found) return found;
    const k = KINDS[kind];
    const size = Math.ceil(k.r * 6);
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = Math.ceil(size * dpr);
    const g = canvas.getContext("2d");
    g.scale(dpr, dpr);
    const mid = size / 2;
    const glow = g.createRadialGradient(mid, mid, 0, mid, mid, mid);
    glow.addColorStop(0, k.color);
    glow.addColorStop(k.r / mid, k.color);
    glow.addColorStop(Math.min(0.99, (k.r + 1.2) / mid), rgba(k.color, 0.4));
    glow.addColorStop(1, "rgba(0, 0, 0, 0)");
    g.fillStyle = glow;
    g.fillRect(0, 0, size, size);
    found = { canvas, size };
    sprites.set(key, found);
    return found;
  }

  function paintFx(now) {
    const g = fx.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, width, height);
    if (!scene) return;
    const ctl = scene.controller;

    // The controller glows with what reaches it.
    if (ctlGlow > 0) {
      g.beginPath();
      g.arc(ctl.x, ctl.y, ctl.r + 3 + ctlGlow * 6, 0, Math.PI * 2);
      g.strokeStyle = `rgba(165, 148, 255, ${0.25 + ctlGlow * 0.5})`;
      g.lineWidth = 2 + ctlGlow * 2;
      g.stroke();
    }

    for (const p of pulses) {
      const node = scene.nodes.get(p.droneId);
      if (!node) continue;
      const t = (now - p.born) / p.duration;
      const r0 = scene.cards ? 0 : scene.dotR;
      g.globalAlpha = 1 - t;
      g.strokeStyle = p.colour;
      g.lineWidth = 2;
      if (scene.cards) {
        const grow = 2 + t * 10;
        roundRect(g, node.x - CARD_W / 2 - grow, node.y - CARD_H / 2 - grow, CARD_W + 2 * grow, CARD_H + 2 * grow, 10 + grow);
      } else {
        g.beginPath();
        g.arc(node.x, node.y, r0 + 2 + t * Math.max(10, r0 * 2), 0, Math.PI * 2);
      }
      g.stroke();
    }
    g.globalAlpha = 1;

    // Packets: a glow with a fainter one behind it as a trail.
    const trails = flight.length <= 120 && !motionless;
    for (const p of flight) {
      const t = clamp((now - p.born) / p.duration, 0, 1);
      if (motionless) {
        // No travel: the edge lights up and fades.
        g.globalAlpha = 1 - t;
        g.strokeStyle = KINDS[p.kind].color;
        g.lineWidth = 2;
        g.beginPath();
        g.moveTo(p.x0, p.y0);
        g.lineTo(p.x1, p.y1);
        g.stroke();
        continue;
      }
      const { canvas, size } = sprite(p.kind);
      const scale = p.count > 1 ? Math.min(1.8, 1 + Math.log2(p.count) * 0.25) : 1;
      const s = size * scale;
      if (trails && t > 0.06) {
        const e = easeInOut(t - 0.06);
        g.globalAlpha = 0.35;
        g.drawImage(canvas, p.x0 + (p.x1 - p.x0) * e - s * 0.35, p.y0 + (p.y1 - p.y0) * e - s * 0.35, s * 0.7, s * 0.7);
      }
      const e = easeInOut(t);
      g.globalAlpha = 1;
      g.drawImage(canvas, p.x0 + (p.x1 - p.x0) * e - s / 2, p.y0 + (p.y1 - p.y0) * e - s / 2, s, s);
    }
    g.globalAlpha = 1;

    // Hover, keyboard focus and the selected drone.
    for (const [id, style] of [
      [selected, "selected"],
      [hover, "hover"],
      [focused, "focus"],
    ]) {
      const node = id && scene.nodes.get(id);
      if (!node) continue;
      g.strokeStyle = style === "hover" ? "rgba(255, 255, 255, 0.55)" : "#a594ff";
      g.lineWidth = style === "focus" ? 2.5 : 2;
      if (style === "focus") g.setLineDash([4, 3]);
      if (scene.cards) {
        roundRect(g, node.x - CARD_W / 2 - 4, node.y - CARD_H / 2 - 4, CARD_W + 8, CARD_H + 8, 12);
      } else {
        g.beginPath();
        g.arc(node.x, node.y, scene.dotR + 5, 0, Math.PI * 2);
      }
      g.stroke();
      g.setLineDash([]);
    }
    if (now - countersAt >= COUNTERS_MS || flight.length === 0) writeCounters(now);
  }

  let countersAt = 0;
  function writeCounters(now) {
    countersAt = now;
    setData("inFlight", String(flight.length));
    setData("packetsDrawn", String(counts.drawn));
    setData("packetsMerged", String(counts.merged));
    setData("packetsSkipped", String(counts.skipped));
    setData("packetsDropped", String(counts.dropped));
  }

  // -- the record (DOM) ---------------------------------------------------------

  function describe(d) {
    const state = STATES[stateOf(d)].label.toLowerCase();
    const load = d.connected ? `, load ${d.load[0].toFixed(2)}` : "";
    return `${d.name}: ${state}, ${plural(d.cores, "core")}${load}, ${jobText(d)}`;
  }

  /** The accessible list: rebuilt when drones come, go or move between networks, else updated in place. */
  function renderRecord(structure = false) {
    if (structure || list.childElementCount === 0) {
      const seen = new Set();
      const groupItems = [];
      for (const g of groupsOf(drones.slice())) {
        const inner = el("ul");
        for (const d of g.drones) {
          seen.add(d.id);
          let item = items.get(d.id);
          if (!item) {
            const button = el("button", { type: "button", tabindex: "-1" });
            item = el("li", { "data-drone-id": d.id, "data-packets": "0" }, button);
            items.set(d.id, item);
          }
          inner.append(item);
        }
        groupItems.push(
          el("li", { "data-group": g.network }, el("span", {}, `${networkName(g.network)}: ${plural(g.drones.length, "drone")}`), inner),
        );
      }
      for (const id of [...items.keys()]) if (!seen.has(id)) items.delete(id);
      // Moving the focused button through the document would drop its focus: give it back.
      const had = list.contains(document.activeElement) ? focused : null;
      list.replaceChildren(...groupItems);
      if (focused && !items.has(focused)) focused = null;
      const first = list.querySelector("button");
      for (const [id, item] of items) item.firstChild.tabIndex = id === focused || (!focused && item.firstChild === first) ? 0 : -1;
      if (had && items.get(had)) items.get(had).firstChild.focus({ preventScroll: true });
    }
    for (const d of drones) {
      const item = items.get(d.id);
      if (!item) continue;
      const data = item.dataset;
      const node = scene?.nodes.get(d.id);
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
      if (item.firstChild.textContent !== text) item.firstChild.textContent = text;
    }
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

  function select(id, { focusPanel = false } = {}) {
    selected = id;
    body.classList.toggle("with-panel", id !== null);
    panel.hidden = id === null;
    if (id !== null) renderPanel();
    // The stage changes size with the panel; the ResizeObserver lays out again.
    repaintFx();
    if (focusPanel && id !== null) panel.focus({ preventScroll: true });
  }

  function closePanel() {
    const was = selected;
    select(null);
    const button = was && items.get(was)?.firstChild;
    if (button) {
      focusDrone(was);
      button.focus({ preventScroll: true });
    }
  }

  function renderPanel() {
    const d = byId.get(selected);
    if (!d) {
      panel.replaceChildren(
        el("div", { class: "topo-panel-head" }, el("h2", { id: "topo-panel-title" }, "Drone gone"), closeButton()),
        el("p", { class: "muted" }, "This drone is no longer in the fleet."),
      );
      return;
    }
    const now = Date.now();
    const state = stateOf(d);
    const row = (label, value) => [el("dt", {}, label), el("dd", {}, value)];
    const job = d.current_job_id
      ? el("span", {}, jobs.get(d.current_job_id) ?? "…", el("span", { class: "drone-host" }, d.current_job_id))
      : el("span", { class: "muted" }, d.emerge_running ? "emerge running" : "idle");
    const dispatch = d.dispatch
      ? [
          d.dispatch.grounded ? `grounded${d.dispatch.grounded_by ? ` by ${d.dispatch.grounded_by}` : ""}` : null,
          d.dispatch.draining ? `draining${d.dispatch.drained_by ? ` (by ${d.dispatch.drained_by})` : ""}` : null,
          `${plural(d.dispatch.running_jobs ?? 0, "running job")}`,
          d.dispatch.failures ? `${plural(d.dispatch.failures, "failure")} in a row` : null,
        ]
          .filter(Boolean)
          .join(" · ")
      : "builds are off";
    const link = (href, label, enabled = true, why = "") =>
      enabled
        ? el("a", { class: "btn btn-small", href, "data-focus-key": label }, label)
        : el("span", { class: "btn btn-small topo-link-off", "aria-disabled": "true", title: why }, label);
    const name = encodeURIComponent(d.name);
    // Rendered again on every poll: the focus stays on the same control.
    const focusKey = panel.contains(document.activeElement) ? document.activeElement.dataset.focusKey : undefined;
    panel.dataset.drone = d.name;
    panel.replaceChildren(
      el(
        "div",
        { class: "topo-panel-head" },
        el("div", {}, el("h2", { id: "topo-panel-title" }, d.name), el("span", { class: "drone-host" }, d.hostname || d.id)),
        closeButton(),
      ),
      el("span", { class: `pill pill-${state}` }, state),
      el(
        "dl",
        { class: "topo-facts" },
        ...row("Network", networkName(d.network || "")),
        ...row("Type", d.drone_type || "unknown"),
        ...row("Cores", String(d.cores)),
        ...row("Load", d.connected ? d.load.map((x) => x.toFixed(2)).join(" / ") : "–"),
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
    if (focusKey) panel.querySelector(`[data-focus-key="${focusKey}"]`)?.focus({ preventScroll: true });
  }

  function closeButton() {
    return el(
      "button",
      { class: "btn btn-small btn-quiet topo-close", type: "button", "aria-label": "Close the details", "data-focus-key": "close", onclick: closePanel },
      "×",
    );
  }

  // -- recent events and the activity strip --------------------------------------

  let recent = []; // newest first, at most RECENT_EVENTS
  let moment = null;
  let momentAsk = 0;

  function eventRow(e) {
    return el(
      "li",
      { "data-event-id": String(e.id), "data-type": e.type },
      el("time", { datetime: e.ts }, timeOf(e.ts)),
      el("span", { class: "topo-event-type" }, e.type),
      el("span", { class: "topo-event-message", title: e.message }, e.message),
    );
  }

  function addRecent(e) {
    recent.unshift(e);
    if (recent.length > RECENT_EVENTS) recent.length = RECENT_EVENTS;
    if (moment === null) momentList.prepend(eventRow(e));
    while (moment === null && momentList.children.length > RECENT_EVENTS) momentList.lastChild.remove();
  }

  function showRecent() {
    momentTitle.textContent = "Recent events";
    momentNote.textContent = "live";
    momentList.dataset.moment = "";
    momentList.replaceChildren(...recent.map(eventRow));
    if (!recent.length) momentList.append(el("li", { class: "topo-events-empty" }, "No events yet."));
  }

  async function loadRecent() {
    try {
      const reply = await get("/admin/api/events?limit=20");
      const known = new Set(recent.map((e) => e.id));
      recent = [...recent, ...reply.events.reverse().filter((e) => !known.has(e.id))]
        .sort((a, b) => b.id - a.id)
        .slice(0, RECENT_EVENTS);
      if (moment === null) showRecent();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
    }
  }

  async function showMoment(m) {
    moment = m;
    if (m === null) {
      showRecent();
      return;
    }
    const ask = ++momentAsk;
    const from = m.start.toISOString();
    const span = `${m.start.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}–${m.end.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`;
    momentTitle.textContent = `Events ${span}`;
    momentNote.textContent = "loading…";
    momentList.dataset.moment = from;
    try {
      const reply = await get(`/admin/api/events?since=${encodeURIComponent(from)}&limit=${MOMENT_EVENTS}`);
      if (ask !== momentAsk || moment === null) return;
      const end = m.end.getTime();
      const within = reply.events.filter((e) => m.latest || Date.parse(e.ts) < end);
      const more = reply.events.length === MOMENT_EVENTS && within.length === reply.events.length;
      momentNote.textContent = within.length ? `${more ? "first " : ""}${plural(within.length, "event")}` : "nothing happened";
      momentList.dataset.count = String(within.length);
      momentList.replaceChildren(...within.map(eventRow));
      if (!within.length) momentList.append(el("li", { class: "topo-events-empty" }, "No events in this moment."));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (ask === momentAsk) momentNote.textContent = `could not load: ${error.message}`;
    }
  }

  const wave = new Waveform(waveHost, {
    url: "/admin/api/activity",
    load: get,
    label: "Activity over the last 24 hours: drag to see the events of a moment",
    onScrub: (m) => {
      // Dragging reports each bucket it passes; the newest question wins.
      showMoment(m);
    },
  });

  // -- input ------------------------------------------------------------------

  function nodeAt(x, y) {
    if (!scene) return null;
    let best = null;
    let bestD = Infinity;
    for (const [id, node] of scene.nodes) {
      if (scene.cards) {
        if (Math.abs(x - node.x) <= CARD_W / 2 && Math.abs(y - node.y) <= CARD_H / 2) return id;
        continue;
      }
      const dist = Math.hypot(x - node.x, y - node.y);
      if (dist < bestD) {
        bestD = dist;
        best = id;
      }
    }
    return best !== null && bestD <= Math.max(scene.dotR + 4, scene.cell * 0.5) ? best : null;
  }

  function local(event) {
    const rect = fx.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }

  function showTip(id) {
    const node = id && scene?.nodes.get(id);
    if (!node || scene.cards) {
      tip.hidden = true;
      return;
    }
    tip.textContent = describe(node.drone);
    tip.hidden = false;
    const half = tip.offsetWidth / 2;
    const x = clamp(node.x, half + 6, width - half - 6);
    const above = node.y - scene.dotR - 10 > 30;
    tip.style.transform = `translate(${Math.round(x - half)}px, ${Math.round(above ? node.y - scene.dotR - 8 : node.y + scene.dotR + 8)}px) translateY(${above ? "-100%" : "0"})`;
  }

  fx.addEventListener("pointermove", (event) => {
    const id = nodeAt(...local(event));
    fx.style.cursor = id ? "pointer" : "default";
    if (id === hover) return;
    hover = id;
    showTip(hover ?? focused);
    repaintFx();
  });
  fx.addEventListener("pointerleave", () => {
    hover = null;
    showTip(focused);
    repaintFx();
  });
  fx.addEventListener("click", (event) => {
    const id = nodeAt(...local(event));
    if (id) {
      focusDrone(id);
      select(id);
    } else if (selected) {
      select(null);
    }
  });

  function focusDrone(id) {
    focused = id;
    for (const [other, item] of items) item.firstChild.tabIndex = other === id ? 0 : -1;
    showTip(id);
    repaintFx();
  }

  list.addEventListener("focusin", (event) => {
    const item = event.target.closest("li[data-drone-id]");
    if (item) focusDrone(item.dataset.droneId);
    stage.classList.add("keyboard");
  });
  list.addEventListener("focusout", (event) => {
    if (list.contains(event.relatedTarget)) return;
    stage.classList.remove("keyboard");
    focused = null;
    showTip(hover);
    repaintFx();
  });
  list.addEventListener("click", (event) => {
    const item = event.target.closest("li[data-drone-id]");
    if (item) select(item.dataset.droneId, { focusPanel: false });
  });
  list.addEventListener("keydown", (event) => {
    const buttons = [...list.querySelectorAll("button")];
    const at = buttons.indexOf(document.activeElement);
    if (at < 0) return;
    const moves = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1, Home: -Infinity, End: Infinity };
    if (event.key === "Escape" && selected) {
      event.preventDefault();
      select(null);
      return;
    }
    if (!(event.key in moves)) return;
    event.preventDefault();
    const next = clamp(Number.isFinite(moves[event.key]) ? at + moves[event.key] : moves[event.key] < 0 ? 0 : buttons.length - 1, 0, buttons.length - 1);
    buttons[next].focus({ preventScroll: true });
  });
  panel.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      closePanel();
    }
  });

  const resizer = new ResizeObserver(() => {
    if (active) resize();
  });
  resizer.observe(stage);
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
    show(params) {
      if (params?.drone) {
        ctx.settle("topology");
        const found = drones.find((d) => d.name === params.drone);
        if (found) select(found.id);
        else pendingSelect = params.drone;
      }
      if (active) return;
      active = true;
      rounds += 1;
      resize();
      poll(rounds);
      eventSocket.start();
      loadRecent();
      wave.show();
    },
    hide() {
      active = false;
      if (pollTimer !== null) window.clearTimeout(pollTimer);
      pollTimer = null;
      if (frame !== null) window.cancelAnimationFrame(frame);
      frame = null;
      protocolSocket.stop();
      eventSocket.stop();
      wave.hide();
      flight = [];
      pulses = [];
      ctlGlow = 0;
    },
  };
}
