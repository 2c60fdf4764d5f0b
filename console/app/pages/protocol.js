// Protocol: the control-stream messages between the controller and the
// drones, as a live table (newest on top), from /ws/protocol; the recent
// ones first from GET /admin/api/protocol. Drone and type filter on the
// controller (the socket is opened again); with a large fleet heartbeats
// are sampled there (sample=N: every Nth heartbeat of each drone). A row
// opens the decoded message (GET /admin/api/protocol/{seq}) while the
// controller's buffer still holds it.

import { ApiError, get, liveSocket } from "../api.js";
import { fleet } from "../fleet.js";
import { el } from "../ui.js";

const MAX_ROWS = 500;
const BACKFILL = 5000; // entries looked through for the recent ones that match
const SAMPLES = [1, 2, 5, 10, 50, 100];
const AUTO_RATE = 20; // heartbeats a second the automatic sampling aims at
const NAMES_EVERY_MS = 5000;
const RATE_WINDOW_MS = 5000;
const KNOWN_TYPES = [
  "heartbeat", "ping", "pong", "hello", "welcome", "build_event", "start_build", "cancel_build", "open_channel",
  "restart_service", "duplicate_drone",
];
const TONES = {
  heartbeat: "beat", ping: "ping", pong: "ping", hello: "hello", welcome: "hello",
  build_event: "build", start_build: "build", cancel_build: "build",
};

function clock(iso) {
  const d = new Date(iso);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function latency(ms) {
  if (ms === null || ms === undefined) return "";
  return ms < 10 ? `${ms.toFixed(2)} ms` : `${ms.toFixed(1)} ms`;
}

export function create(ctx) {
  const droneSelect = el("select", { id: "protocol-drone", "aria-label": "Drone" }, el("option", { value: "" }, "All drones"));
  const typeSelect = el(
    "select",
    { id: "protocol-type", "aria-label": "Message type" },
    el("option", { value: "" }, "All types"),
    ...KNOWN_TYPES.map((t) => el("option", { value: t }, t)),
  );
  const sampleSelect = el(
    "select",
    { id: "protocol-sample", "aria-label": "Heartbeats shown", title: "With a large fleet, show every Nth heartbeat of each drone" },
    el("option", { value: "auto" }, "Heartbeats: auto"),
    ...SAMPLES.map((n) => el("option", { value: String(n) }, n === 1 ? "Heartbeats: all" : `Heartbeats: 1 in ${n}`)),
  );
  const pauseButton = el("button", { class: "btn pr-pause", type: "button", "aria-pressed": "false" }, "Pause");
  const clearButton = el("button", { class: "btn btn-quiet", type: "button" }, "Clear");
  const toolbar = el("div", { class: "pr-toolbar" }, droneSelect, typeSelect, sampleSelect, el("span", { class: "pr-spacer" }), clearButton, pauseButton);

  const live = el("span", { class: "live stale", "aria-live": "polite" }, "Connecting…");
  const rate = el("span", { class: "pr-rate" }, "");
  const summary = el("p", { class: "page-sub" }, "Control-stream messages between the controller and its drones, as they pass");
  const problem = el("div", { class: "banner banner-error", role: "alert", hidden: "" });
  const body = el("tbody");
  const table = el(
    "table",
    { class: "table pr-table", "aria-label": "Protocol messages" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        el("th", { scope: "col", class: "num" }, "No."),
        el("th", { scope: "col" }, "Time"),
        el("th", { scope: "col" }, "Dir"),
        el("th", { scope: "col" }, "Drone"),
        el("th", { scope: "col" }, "Type"),
        el("th", { scope: "col", class: "num" }, "Size"),
        el("th", { scope: "col", class: "num" }, "Latency"),
      ),
    ),
    body,
  );
  const empty = el("div", { class: "empty" }, el("strong", {}, "Waiting for messages"), el("span", {}, "Heartbeats, pings and pongs show here as they cross the control streams."));
  const list = el("div", { class: "panel pr-list" }, table, empty);
  const detail = el("aside", { class: "pr-detail", id: "protocol-detail", "aria-label": "Decoded message", "aria-live": "polite", hidden: "" });
  const page = el(
    "section",
    { class: "page page-fill pr-page", "aria-labelledby": "protocol-title", "data-paused": "0" },
    el("header", { class: "page-head" }, el("div", {}, el("h1", { id: "protocol-title" }, "Protocol"), summary), el("div", { class: "pr-head-right" }, rate, live)),
    toolbar,
    problem,
    el("div", { class: "pr-body" }, list, detail),
  );

  const names = new Map(); // drone id -> name
  let namesAt = 0;
  let connected = 0;
  let generation = 0;
  let active = false;
  let paused = false;
  let heldCount = 0;
  let queue = []; // arrived, not laid out yet (bounded by MAX_ROWS)
  let backfilling = false;
  let newestSeq = 0;
  let frame = null;
  let ticker = null;
  const arrivals = []; // times of arrival within RATE_WINDOW_MS
  let selectedSeq = null;
  let detailGen = 0;

  // -- drones ---------------------------------------------------------------

  async function refreshNames() {
    namesAt = Date.now();
    try {
      const drones = await fleet.fetch();
      for (const d of drones) names.set(d.id, d.name);
      connected = drones.filter((d) => d.connected).length;
      const chosen = droneSelect.value;
      const sorted = drones.map((d) => d.name).sort();
      droneSelect.replaceChildren(el("option", { value: "" }, "All drones"), ...sorted.map((n) => el("option", { value: n }, n)));
      if (chosen && !sorted.includes(chosen)) droneSelect.append(el("option", { value: chosen }, chosen));
      droneSelect.value = chosen;
      for (const tr of body.querySelectorAll("tr[data-unnamed]")) {
        const name = names.get(tr.dataset.droneId);
        if (name) {
          tr.cells[3].textContent = name;
          tr.dataset.drone = name;
          delete tr.dataset.unnamed;
        }
      }
      autoLabel();
    } catch {
      // ids stay shown until the next try
    }
  }

  function sample() {
    if (sampleSelect.value !== "auto") return Number(sampleSelect.value);
    return connected <= AUTO_RATE ? 1 : Math.ceil(connected / AUTO_RATE);
  }

  function autoLabel() {
    const auto = sampleSelect.options[0];
    const n = connected <= AUTO_RATE ? 1 : Math.ceil(connected / AUTO_RATE);
    auto.textContent = n === 1 ? "Heartbeats: auto (all)" : `Heartbeats: auto (1 in ${n})`;
  }

  // -- rows -----------------------------------------------------------------

  function droneName(id) {
    return names.get(id) ?? (id ? id.slice(0, 8) : "–");
  }

  function row(entry) {
    const name = names.get(entry.drone_id);
    const dirText = entry.direction === "in" ? "in" : "out";
    const tr = el(
      "tr",
      {
        class: "pr-row",
        tabindex: "-1",
        "data-seq": String(entry.seq),
        "data-type": entry.type,
        "data-direction": entry.direction,
        "data-drone-id": entry.drone_id,
        "data-drone": name ?? "",
        "aria-selected": String(entry.seq === selectedSeq),
      },
      el("td", { class: "num pr-seq" }, String(entry.seq)),
      el("td", { class: "pr-time", title: entry.ts }, clock(entry.ts)),
      el(
        "td",
        {},
        el(
          "span",
          { class: `pr-dir pr-dir-${dirText}`, title: dirText === "in" ? "drone → controller" : "controller → drone" },
          dirText,
        ),
      ),
      el("td", { class: "pr-drone" }, droneName(entry.drone_id)),
      el("td", {}, el("span", { class: `pr-type pr-t-${TONES[entry.type] ?? "other"}` }, entry.type)),
      el("td", { class: "num pr-size" }, `${entry.size} B`),
      el("td", { class: "num pr-latency" }, latency(entry.latency_ms)),
    );
    if (!name && entry.drone_id) tr.dataset.unnamed = "1";
    return tr;
  }

  function gapRow(text, kind) {
    return el("tr", { class: `pr-gap pr-gap-${kind}`, "data-gap": kind }, el("td", { colspan: "7" }, text));
  }

  function ensureType(type) {
    if ([...typeSelect.options].some((o) => o.value === type)) return;
    typeSelect.append(el("option", { value: type }, type));
  }

  function insert(nodes) {
    // Nodes newest first; they go on top. A reader scrolled down keeps their place.
    if (!nodes.length) return;
    const keepPlace = list.scrollTop > 0;
    const before = keepPlace ? list.scrollHeight : 0;
    body.prepend(...nodes);
    while (body.rows.length > MAX_ROWS) body.lastElementChild.remove();
    if (keepPlace) list.scrollTop += list.scrollHeight - before;
    fixFocus();
    empty.hidden = true;
    page.dataset.rows = String(body.rows.length);
  }

  function flush() {
    frame = null;
    if (backfilling || paused) return;
    const entries = queue;
    queue = [];
    const nodes = [];
    for (let i = entries.length - 1; i >= 0; i -= 1) {
      const item = entries[i];
      nodes.push(item.gap ? gapRow(item.gap, item.kind) : row(item));
    }
    insert(nodes);
  }

  function schedule() {
    if (frame === null && active && !backfilling) frame = window.requestAnimationFrame(flush);
  }

  function enqueue(item) {
    queue.push(item);
    if (queue.length > MAX_ROWS) queue.splice(0, queue.length - MAX_ROWS);
    schedule();
  }

  function arrive(entry) {
    if (entry.seq <= newestSeq) return; // the backfill had it
    newestSeq = entry.seq;
    arrivals.push(performance.now());
    if (!names.has(entry.drone_id) && entry.drone_id && Date.now() - namesAt > NAMES_EVERY_MS) refreshNames();
    ensureType(entry.type);
    if (paused) {
      heldCount += 1;
      pauseButton.textContent = `Resume · ${heldCount.toLocaleString()} new`;
      page.dataset.held = String(heldCount);
      return;
    }
    enqueue(entry);
  }

  function fixFocus() {
    const rows = body.querySelectorAll("tr[data-seq]");
    let focusable = selectedSeq !== null ? body.querySelector(`tr[data-seq="${selectedSeq}"]`) : null;
    const active = document.activeElement;
    if (active instanceof HTMLElement && active.parentElement === body && active.dataset.seq) focusable = active;
    focusable ??= rows[0] ?? null;
    for (const r of rows) r.tabIndex = r === focusable ? 0 : -1;
  }

  // -- the decoded message --------------------------------------------------

  async function open(seq) {
    selectedSeq = seq;
    for (const r of body.querySelectorAll('tr[aria-selected="true"]')) r.setAttribute("aria-selected", "false");
    body.querySelector(`tr[data-seq="${seq}"]`)?.setAttribute("aria-selected", "true");
    const mine = ++detailGen;
    detail.dataset.seq = String(seq);
    detail.dataset.state = "loading";
    detail.replaceChildren(head(`Message #${seq}`), el("p", { class: "muted" }, "Decoding…"));
    detail.hidden = false;
    let found;
    try {
      found = await get(`/admin/api/protocol/${seq}`);
    } catch (error) {
      if (mine !== detailGen) return;
      detail.dataset.state = error.status === 404 ? "gone" : "error";
      const text =
        error.status === 404
          ? `This message has left the controller's buffer, which keeps only the newest ones (${error.message}).`
          : `Could not decode it: ${error instanceof ApiError ? error.message : error}`;
      detail.replaceChildren(head(`Message #${seq}`), el("p", { class: "pr-detail-note", role: "alert" }, text));
      return;
    }
    if (mine !== detailGen) return;
    detail.dataset.state = "loaded";
    const fields = [
      ["Time", new Date(found.ts).toLocaleString() + ` (${clock(found.ts)})`],
      ["Direction", found.direction === "in" ? "drone → controller" : "controller → drone"],
      ["Drone", found.drone ? `${found.drone} (${found.drone_id})` : found.drone_id || "–"],
      ["Size", `${found.size} bytes`],
    ];
    if (found.latency_ms !== null && found.latency_ms !== undefined) fields.push(["Round trip", latency(found.latency_ms)]);
    detail.replaceChildren(
      head(`#${found.seq}`, found.type),
      el("dl", { class: "pr-fields" }, ...fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-field": k.toLowerCase() }, v)])),
      el("h2", { class: "pr-detail-sub" }, "Decoded message"),
      found.message === null
        ? el("p", { class: "muted" }, "The controller kept no copy of this message.")
        : el("pre", { class: "pr-json", tabindex: "0" }, JSON.stringify(found.message, null, 2)),
    );
  }

  function head(title, type) {
    return el(
      "div",
      { class: "pr-detail-head" },
      el("strong", {}, title),
      type ? el("span", { class: `pr-type pr-t-${TONES[type] ?? "other"}` }, type) : "",
      el("button", { class: "btn btn-small btn-quiet pr-detail-close", type: "button", "aria-label": "Close the message", onclick: closeDetail }, "×"),
    );
  }

  function closeDetail() {
    detailGen += 1;
    const tr = body.querySelector(`tr[data-seq="${selectedSeq}"]`);
    selectedSeq = null;
    detail.hidden = true;
    for (const r of body.querySelectorAll('tr[aria-selected="true"]')) r.setAttribute("aria-selected", "false");
    tr?.focus();
  }

  body.addEventListener("click", (event) => {
    const tr = event.target.closest("tr[data-seq]");
    if (!tr) return;
    tr.focus();
    open(Number(tr.dataset.seq));
  });
  body.addEventListener("keydown", (event) => {
    const tr = event.target.closest("tr[data-seq]");
    if (!tr) return;
    const rows = [...body.querySelectorAll("tr[data-seq]")];
    const at = rows.indexOf(tr);
    const moves = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: rows.length - 1, PageDown: at + 10, PageUp: at - 10 };
    if (event.key in moves) {
      event.preventDefault();
      const next = rows[Math.max(0, Math.min(rows.length - 1, moves[event.key]))];
      for (const r of rows) r.tabIndex = r === next ? 0 : -1;
      next.focus();
      next.scrollIntoView({ block: "nearest" });
    } else if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      open(Number(tr.dataset.seq));
    } else if (event.key === "Escape" && !detail.hidden) {
      closeDetail();
    }
  });

  // -- the stream -----------------------------------------------------------

  function filters() {
    const q = new URLSearchParams();
    if (droneSelect.value) q.set("drone", droneSelect.value);
    if (typeSelect.value) q.set("type", typeSelect.value);
    return q;
  }

  function setLive(name, text) {
    live.dataset.state = name;
    live.textContent = text;
    live.classList.toggle("stale", name !== "live");
  }

  let streamQuery = "";
  /** @type {string | null} why the stream was interrupted since it was last live (a gap to show) */
  let interrupted = null;

  /** The stream, with the filters of the last connect(); reconnects after a loss, and resumes when the page is shown again. */
  const stream = liveSocket(() => `/ws/protocol?${streamQuery}`, {
    onMessage: arrive,
    onGap(gap) {
      enqueue({ gap: `${gap.dropped.toLocaleString()} message${gap.dropped === 1 ? "" : "s"} dropped: the browser fell behind`, kind: "dropped" });
    },
    onState(status) {
      if (status.state === "connecting") {
        if (!interrupted) setLive("connecting", "Connecting…");
      } else if (status.state === "live") {
        setLive("live", "Live");
        problem.hidden = true;
        if (interrupted) enqueue({ gap: `Messages ${interrupted} are not shown`, kind: "lost" });
        interrupted = null;
      } else if (status.state === "retrying") {
        const wait = Math.max(1, Math.round((status.delay ?? 0) / 1000));
        setLive("reconnecting", `Reconnecting in ${wait} s…`);
        if (status.opened) interrupted ??= "while the connection was lost";
        if (!status.opened && !interrupted) {
          problem.replaceChildren(
            el("span", {}, `The controller refused the protocol stream; trying again in ${wait} s. `),
            el("button", { class: "btn btn-small", type: "button", onclick: connect }, "Reconnect"),
          );
          problem.hidden = false;
        }
      } else if (status.state === "hidden") {
        setLive("hidden", "Paused while the page is hidden");
        interrupted ??= "while the page was hidden";
      } else {
        setLive("stopped", "Stopped");
      }
    },
  });

  function stop() {
    stream.stop();
    if (frame !== null) window.cancelAnimationFrame(frame);
    frame = null;
  }

  async function connect() {
    stop();
    generation += 1;
    const mine = generation;
    queue = [];
    newestSeq = 0;
    backfilling = true;
    body.replaceChildren();
    empty.hidden = false;
    problem.hidden = true;
    page.dataset.rows = "0";
    const q = filters();
    q.set("sample", String(sample()));
    page.dataset.sample = q.get("sample") ?? "1";
    streamQuery = q.toString();
    interrupted = null;
    stream.start();
    await backfill(mine, filters());
  }

  async function backfill(mine, q) {
    try {
      const { last_seq: last } = await get("/admin/api/protocol?limit=1");
      q.set("after", String(Math.max(0, last - BACKFILL)));
      q.set("limit", String(BACKFILL));
      const { entries } = await get(`/admin/api/protocol?${q}`);
      if (mine !== generation) return;
      const recent = entries.slice(-MAX_ROWS);
      const nodes = recent.reverse().map(row);
      if (recent.length) newestSeq = Math.max(newestSeq, recent[0].seq);
      for (const entry of recent) ensureType(entry.type);
      insert(nodes);
    } catch (error) {
      if (mine !== generation) return;
      problem.textContent = `Could not load the recent messages: ${error instanceof ApiError ? error.message : error}`;
      problem.hidden = false;
    } finally {
      if (mine === generation) {
        backfilling = false;
        // Live ones that the backfill also had are left out.
        const last = Number(body.querySelector("tr[data-seq]")?.dataset.seq ?? 0);
        queue = queue.filter((item) => item.gap || item.seq > last);
        schedule();
      }
    }
  }

  function setPaused(on) {
    paused = on;
    page.dataset.paused = on ? "1" : "0";
    pauseButton.setAttribute("aria-pressed", String(on));
    if (on) {
      heldCount = 0;
      page.dataset.held = "0";
      pauseButton.textContent = "Resume";
      if (frame !== null) window.cancelAnimationFrame(frame);
      frame = null;
      flush(); // what arrived before the pause is shown
      queue = [];
    } else {
      pauseButton.textContent = "Pause";
      if (heldCount) {
        enqueue({ gap: `${heldCount.toLocaleString()} message${heldCount === 1 ? "" : "s"} arrived while paused (not shown)`, kind: "paused" });
      }
      heldCount = 0;
      page.dataset.held = "0";
    }
  }

  function tick() {
    const now = performance.now();
    while (arrivals.length && now - arrivals[0] > RATE_WINDOW_MS) arrivals.shift();
    const perSecond = arrivals.length / (RATE_WINDOW_MS / 1000);
    rate.textContent = `${perSecond < 10 ? perSecond.toFixed(1) : Math.round(perSecond)} msg/s`;
  }

  pauseButton.addEventListener("click", () => setPaused(!paused));
  clearButton.addEventListener("click", () => {
    queue = [];
    body.replaceChildren();
    empty.hidden = false;
    page.dataset.rows = "0";
  });
  droneSelect.addEventListener("change", connect);
  typeSelect.addEventListener("change", connect);
  sampleSelect.addEventListener("change", connect);
  droneSelect.addEventListener("focus", refreshNames);

  return {
    el: page,
    async show(params) {
      active = true;
      if (params.drone !== undefined || params.type !== undefined) {
        if (params.drone) droneSelect.append(el("option", { value: params.drone }, params.drone));
        droneSelect.value = params.drone ?? "";
        if (params.type) ensureType(params.type);
        typeSelect.value = params.type ?? "";
        ctx.settle("protocol");
      }
      ticker = window.setInterval(tick, 1000);
      await refreshNames();
      if (active) connect();
    },
    hide() {
      active = false;
      generation += 1;
      stop();
      if (ticker !== null) window.clearInterval(ticker);
      ticker = null;
      arrivals.length = 0;
    },
  };
}
