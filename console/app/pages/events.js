// Events: what happened in the swarm, newest first. The recent ones come
// from GET /admin/api/events, then live ones from /ws/events, which resumes
// with since=<last id seen> after a lost connection or a gap (the
// controller drops what a slow browser cannot take, and says so), so no
// event is missed or shown twice. Type and drone filter on the controller;
// the text search filters what is kept here. Audit events (what an admin
// did) are marked with who did it (data.by).

import { ApiError, get, liveSocket } from "../api.js";
import { fleet } from "../fleet.js";
import { el } from "../ui.js";

const MAX_EVENTS = 1000; // kept, newest; the table shows those that match the search
const FIRST_PAGE = 300;
const AUDIT_TYPES = new Set(["drone_exec", "drone_access_changed", "drone_pinged"]);
const KNOWN_TYPES = [
  "admin_login", "admin_login_failed", "admin_logout", "admin_key_added", "admin_key_removed", "admin_auth_locked",
  "controller_started", "controller_stopped", "drone_connected", "drone_enrolled", "drone_recovered", "drone_alert",
  "drone_pinged", "drone_exec", "drone_draining", "drone_undrained", "drone_grounded", "drone_ungrounded",
  "drone_revoked", "drone_replaced", "drone_duplicate", "enrollment_failed", "drone_access_changed", "heal_action",
  "healing_throttled", "healing_resumed",
  "fleet_dark", "fleet_dark_cleared", "jobs_queued", "job_done", "job_failed", "job_failed_on_drone", "job_requeued",
  "package_staged", "session_created", "session_control", "session_complete", "shell_opened", "shell_reattached",
  "shell_closed", "shell_killed", "token_created", "token_revoked", "protocol_error",
  "release_cut", "release_promoted", "release_rolled_back", "release_deleted", "release_pruned",
  "release_schedule_waiting", "release_schedule_skipped", "release_auto_promote_cancelled",
  "binhost_saved", "binhost_deleted", "binhost_sync_started", "binhost_sync_progress", "binhost_synced",
  "binhost_sync_failed", "binhost_stale", "binhost_unreachable", "binhost_healthy",
];

export function isAudit(event) {
  return (
    event.type.startsWith("admin_") ||
    event.type.startsWith("shell_") ||
    AUDIT_TYPES.has(event.type) ||
    typeof event.data?.by === "string"
  );
}

function tone(type) {
  if (/fail|alert|error|revoked|locked|duplicate|dark$|unreachable/.test(type)) return "bad";
  if (/grounded|heal(?!thy)|requeued|throttled|draining|killed|stale$/.test(type)) return "warn";
  if (/done|staged|complete|recovered|connected|cleared|ungrounded|started|synced|healthy$/.test(type)) return "ok";
  if (/^(admin|shell)_/.test(type)) return "audit";
  return "info";
}

function when(iso) {
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  const time = date.toLocaleTimeString([], { hour12: false });
  return today ? time : `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

export function create(ctx) {
  const search = el("input", {
    id: "events-search",
    class: "ev-input",
    type: "search",
    placeholder: "Search messages",
    "aria-label": "Search the messages",
    autocomplete: "off",
  });
  const types = el("input", {
    id: "events-type",
    class: "ev-input ev-type",
    type: "text",
    list: "events-types",
    placeholder: "All types",
    "aria-label": "Types (comma-separated)",
    autocomplete: "off",
    spellcheck: "false",
  });
  const typeList = el("datalist", { id: "events-types" });
  const drone = el("select", { id: "events-drone", "aria-label": "Drone" }, el("option", { value: "" }, "All drones"));
  const pause = el("button", { class: "btn ev-pause", type: "button", "aria-pressed": "false" }, "Pause");
  const toolbar = el("div", { class: "ev-toolbar", role: "search" }, search, types, typeList, drone, pause);

  const live = el("span", { class: "live stale", "aria-live": "polite" }, "Connecting…");
  const summary = el("p", { class: "page-sub" }, "Loading…");
  const problem = el("div", { class: "banner banner-error", role: "alert", hidden: "" });
  const held = el("button", { class: "ev-held", type: "button", hidden: "" }, "");
  const body = el("tbody");
  const table = el(
    "table",
    { class: "table ev-table", "aria-label": "Events" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        el("th", { scope: "col" }, "Time"),
        el("th", { scope: "col" }, "Type"),
        el("th", { scope: "col" }, "Drone"),
        el("th", { scope: "col" }, "Message"),
        el("th", { scope: "col" }, "By"),
      ),
    ),
    body,
  );
  const empty = el("div", { class: "empty", hidden: "" }, el("strong", {}, "No events match"), el("span", {}, "Change the filters, or wait for something to happen."));
  const detail = el("aside", { class: "ev-detail", id: "events-detail", "aria-label": "Event details", hidden: "" });
  const page = el(
    "section",
    { class: "page page-fill ev-page", "aria-labelledby": "events-title" },
    el("header", { class: "page-head" }, el("div", {}, el("h1", { id: "events-title" }, "Events"), summary), live),
    toolbar,
    problem,
    el("div", { class: "ev-body" }, el("div", { class: "panel ev-list" }, held, table, empty), detail),
  );

  let events = []; // ascending by id, at most MAX_EVENTS
  const known = new Set();
  let lastId = 0;
  let generation = 0;
  let active = false;
  let paused = false;
  let heldCount = 0;
  let fresh = []; // arrived, not laid out yet
  let frame = null;
  let selectedId = null;
  let filters = { type: "", drone: "" };

  // -- filters and rendering ------------------------------------------------

  function needle() {
    return search.value.trim().toLowerCase();
  }

  function matches(event, text = needle()) {
    return !text || event.message.toLowerCase().includes(text) || (event.drone_name ?? "").toLowerCase().includes(text);
  }

  function row(event) {
    const audit = isAudit(event);
    const by = event.data?.by;
    const tr = el(
      "tr",
      {
        class: `ev-row${audit ? " ev-audit" : ""}`,
        tabindex: "-1",
        "data-id": String(event.id),
        "data-type": event.type,
        ...(audit ? { "data-audit": "1" } : {}),
        "aria-selected": String(event.id === selectedId),
      },
      el("td", { class: "ev-time", title: event.ts }, when(event.ts)),
      el("td", {}, el("span", { class: `ev-type-badge ev-t-${tone(event.type)}` }, event.type)),
      el("td", { class: "ev-drone" }, event.drone_name ?? (event.drone_id ? event.drone_id.slice(0, 8) : "–")),
      el("td", { class: "ev-message" }, event.message),
      el(
        "td",
        { class: "ev-by" },
        audit
          ? el(
              "span",
              { class: `ev-who${typeof by === "string" ? "" : " ev-who-unknown"}`, title: "Audit event: an admin's action or attempt" },
              typeof by === "string" ? by : "audit",
            )
          : "",
      ),
    );
    return tr;
  }

  function renderAll() {
    const text = needle();
    const shown = events.filter((e) => matches(e, text)).reverse();
    body.replaceChildren(...shown.map(row));
    fixFocus();
    counts();
  }

  function counts() {
    const shown = body.childElementCount;
    empty.hidden = shown > 0;
    table.hidden = shown === 0;
    const audits = events.filter(isAudit).length;
    summary.textContent =
      `${shown.toLocaleString()} shown of ${events.length.toLocaleString()} kept` +
      (audits ? ` · ${audits} audit` : "") +
      (filters.type || filters.drone ? ` · filtered on the controller` : "");
    page.dataset.count = String(shown);
  }

  function fixFocus() {
    // One row is in the tab order (the selected one, else the newest).
    const rows = body.rows;
    let focusable = selectedId !== null ? body.querySelector(`tr[data-id="${selectedId}"]`) : null;
    focusable ??= rows[0] ?? null;
    for (const r of rows) r.tabIndex = r === focusable ? 0 : -1;
  }

  function keep(event) {
    const newest = events.length ? events[events.length - 1].id : 0;
    if (event.id <= newest && events.some((e) => e.id === event.id)) return false; // a resume may repeat one
    lastId = Math.max(lastId, event.id);
    events.push(event);
    if (events.length > 1 && event.id < events[events.length - 2].id) events.sort((a, b) => a.id - b.id);
    if (events.length > MAX_EVENTS) events.splice(0, events.length - MAX_EVENTS);
    if (!known.has(event.type)) {
      known.add(event.type);
      listTypes();
    }
    return true;
  }

  function arrive(event) {
    if (!keep(event)) return;
    if (paused) {
      heldCount += 1;
      held.textContent = `${heldCount.toLocaleString()} new event${heldCount === 1 ? "" : "s"} while paused · resume`;
      held.hidden = false;
      return;
    }
    fresh.push(event);
    if (frame === null) frame = window.requestAnimationFrame(flush);
  }

  function flush() {
    frame = null;
    const text = needle();
    const rows = fresh.filter((e) => matches(e, text)).map(row);
    fresh = [];
    if (rows.length) {
      body.prepend(...rows.reverse());
      const oldest = events.length ? events[0].id : 0;
      while (body.rows.length && (body.rows.length > MAX_EVENTS || Number(body.lastElementChild.dataset.id) < oldest)) {
        body.lastElementChild.remove();
      }
      fixFocus();
    }
    counts();
  }

  function listTypes() {
    const all = [...new Set([...KNOWN_TYPES, ...known])].sort();
    typeList.replaceChildren(...all.map((t) => el("option", { value: t })));
  }

  async function listDrones() {
    try {
      const drones = await fleet.fetch();
      const chosen = drone.value;
      const names = drones.map((d) => d.name).sort();
      drone.replaceChildren(el("option", { value: "" }, "All drones"), ...names.map((n) => el("option", { value: n }, n)));
      if (chosen && !names.includes(chosen)) drone.append(el("option", { value: chosen }, chosen));
      drone.value = chosen;
    } catch {
      // the list stays as it was
    }
  }

  // -- the detail -----------------------------------------------------------

  function select(id, { focus = false } = {}) {
    selectedId = id;
    for (const r of body.querySelectorAll('tr[aria-selected="true"]')) r.setAttribute("aria-selected", "false");
    const tr = body.querySelector(`tr[data-id="${id}"]`);
    tr?.setAttribute("aria-selected", "true");
    fixFocus();
    if (focus) tr?.focus();
    const event = events.find((e) => e.id === id);
    if (!event) {
      detail.hidden = true;
      return;
    }
    const audit = isAudit(event);
    const fields = [
      ["Event", `#${event.id}`],
      ["Time", new Date(event.ts).toLocaleString()],
      ["Drone", event.drone_name ? `${event.drone_name} (${event.drone_id})` : event.drone_id ?? "–"],
    ];
    if (audit) fields.push(["By", typeof event.data?.by === "string" ? event.data.by : "an admin"]);
    detail.dataset.id = String(id);
    detail.replaceChildren(
      el(
        "div",
        { class: "ev-detail-head" },
        el("span", { class: `ev-type-badge ev-t-${tone(event.type)}` }, event.type),
        audit ? el("span", { class: "ev-who" }, "audit") : "",
        el("button", { class: "btn btn-small btn-quiet ev-detail-close", type: "button", "aria-label": "Close the details", onclick: unselect }, "×"),
      ),
      el("p", { class: "ev-detail-message" }, event.message),
      el("dl", { class: "ev-fields" }, ...fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
      el("h2", { class: "ev-detail-sub" }, "Data"),
      el("pre", { class: "ev-json", tabindex: "0" }, JSON.stringify(event.data ?? {}, null, 2)),
    );
    detail.hidden = false;
  }

  function unselect() {
    const tr = body.querySelector(`tr[data-id="${selectedId}"]`);
    selectedId = null;
    detail.hidden = true;
    for (const r of body.querySelectorAll('tr[aria-selected="true"]')) r.setAttribute("aria-selected", "false");
    fixFocus();
    tr?.focus();
  }

  body.addEventListener("click", (event) => {
    const tr = event.target.closest("tr[data-id]");
    if (tr) select(Number(tr.dataset.id), { focus: true });
  });
  body.addEventListener("keydown", (event) => {
    const tr = event.target.closest("tr[data-id]");
    if (!tr) return;
    let next = null;
    if (event.key === "ArrowDown") next = tr.nextElementSibling;
    else if (event.key === "ArrowUp") next = tr.previousElementSibling;
    else if (event.key === "Home") next = body.firstElementChild;
    else if (event.key === "End") next = body.lastElementChild;
    else if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      select(Number(tr.dataset.id), { focus: true });
      return;
    } else if (event.key === "Escape") {
      unselect();
      return;
    }
    if (next) {
      event.preventDefault();
      for (const r of body.rows) r.tabIndex = -1;
      next.tabIndex = 0;
      next.focus();
      if (!detail.hidden) select(Number(next.dataset.id), { focus: true });
    }
  });

  // -- loading and the stream -----------------------------------------------

  function query(extra = {}) {
    const q = new URLSearchParams(extra);
    if (filters.type) q.set("type", filters.type);
    if (filters.drone) q.set("drone", filters.drone);
    return q;
  }

  function setLive(name, text) {
    live.dataset.state = name;
    live.textContent = text;
    live.classList.toggle("stale", name !== "live");
  }

  async function load() {
    stream.stop();
    generation += 1;
    const mine = generation;
    setLive("connecting", "Connecting…");
    let page;
    try {
      page = await get(`/admin/api/events?${query({ limit: String(FIRST_PAGE) })}`);
    } catch (error) {
      if (mine !== generation) return;
      problem.textContent = `Could not load the events: ${error instanceof ApiError ? error.message : error}`;
      problem.hidden = false;
      setLive("error", "Not connected");
      return;
    }
    if (mine !== generation || !active) return;
    problem.hidden = true;
    events = [];
    lastId = 0;
    for (const event of page.events) keep(event);
    lastId = Math.max(lastId, page.last_id);
    heldCount = 0;
    held.hidden = true;
    renderAll();
    if (selectedId !== null && !events.some((e) => e.id === selectedId)) unselect();
    stream.start();
  }

  // Each connect resumes after the last event kept (since=), so a lost
  // connection, a hidden page or a gap misses nothing and repeats nothing.
  const stream = liveSocket(() => `/ws/events?${query({ since: String(lastId) })}`, {
    onMessage: arrive,
    onGap(gap) {
      // The controller skipped events this page could not take in time:
      // resume after the last one received, which fetches them again.
      lastId = Math.min(lastId, gap.after_id ?? lastId);
      stream.restart();
    },
    onState(status) {
      if (status.state === "connecting") setLive("connecting", "Connecting…");
      else if (status.state === "live") setLive("live", "Live");
      else if (status.state === "retrying") setLive("reconnecting", `Reconnecting in ${Math.max(1, Math.round((status.delay ?? 0) / 1000))} s…`);
      else if (status.state === "hidden") setLive("hidden", "Paused while the page is hidden");
      else setLive("stopped", "Stopped");
    },
  });

  function setPaused(on) {
    paused = on;
    pause.setAttribute("aria-pressed", String(on));
    pause.textContent = on ? "Resume" : "Pause";
    page.dataset.paused = on ? "1" : "0";
    if (!on) {
      heldCount = 0;
      held.hidden = true;
      renderAll();
    }
  }

  pause.addEventListener("click", () => setPaused(!paused));
  held.addEventListener("click", () => setPaused(false));
  search.addEventListener("input", renderAll);

  function applyFilters() {
    const wanted = {
      type: types.value.split(",").map((t) => t.trim()).filter(Boolean).join(","),
      drone: drone.value,
    };
    if (wanted.type === filters.type && wanted.drone === filters.drone) return;
    filters = wanted;
    load();
  }

  types.addEventListener("change", applyFilters);
  types.addEventListener("keydown", (event) => {
    if (event.key === "Enter") applyFilters();
  });
  drone.addEventListener("change", applyFilters);
  drone.addEventListener("focus", listDrones);
  listTypes();

  return {
    el: page,
    show(params) {
      active = true;
      if (params.type !== undefined || params.drone !== undefined) {
        types.value = params.type ?? "";
        if (params.drone) drone.append(el("option", { value: params.drone }, params.drone));
        drone.value = params.drone ?? "";
        filters = { type: types.value, drone: drone.value };
        ctx.settle("events");
      }
      listDrones();
      load();
    },
    hide() {
      active = false;
      generation += 1;
      stream.stop();
      if (frame !== null) window.cancelAnimationFrame(frame);
      frame = null;
      fresh = [];
    },
  };
}
