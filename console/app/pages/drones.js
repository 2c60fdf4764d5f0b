// Drones: the fleet as a table, polled every few seconds while shown.

import { get } from "../api.js";

const POLL_MS = 2000;
const STATUS_ORDER = ["online", "unhealthy", "suspect", "grounded", "draining", "offline"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function ago(iso, now) {
  if (!iso) return "never";
  const seconds = Math.max(0, (now - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

function ping(ms) {
  if (ms === null || ms === undefined) return "–";
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

export function create(ctx) {
  const summary = el("p", { class: "page-sub" }, "Loading…");
  const live = el("span", { class: "live", "aria-live": "polite" });
  const body = el("tbody");
  const empty = el(
    "div",
    { class: "empty", hidden: "" },
    el("strong", {}, "No drone has connected yet."),
    el("span", {}, "Create a join token (POST /admin/api/tokens) and run the enroll command it returns on a drone."),
  );
  const problem = el("div", { class: "banner banner-error", role: "alert", hidden: "" });
  const table = el(
    "table",
    { class: "table", "aria-label": "Drones" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        el("th", { scope: "col" }, "Name"),
        el("th", { scope: "col" }, "Status"),
        el("th", { scope: "col" }, "Type"),
        el("th", { scope: "col", class: "num" }, "Cores"),
        el("th", { scope: "col", class: "num" }, "Load"),
        el("th", { scope: "col", class: "num" }, "Ping"),
        el("th", { scope: "col" }, "Heartbeat"),
        el("th", { scope: "col" }, "Network"),
        el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, "Actions")),
      ),
    ),
    body,
  );
  const page = el(
    "section",
    { class: "page", "aria-labelledby": "drones-title" },
    el(
      "header",
      { class: "page-head" },
      el("div", {}, el("h1", { id: "drones-title" }, "Drones"), summary),
      live,
    ),
    problem,
    el("div", { class: "panel" }, table, empty),
  );

  let timer = null;
  let active = false;
  let rounds = 0;

  function row(drone, now) {
    const terminal = drone.connected
      ? el(
          "button",
          {
            class: "btn btn-small",
            type: "button",
            title: `Open a root shell on ${drone.name}`,
            onclick: () => ctx.go("terminal", { drone: drone.name }),
          },
          "Terminal",
        )
      : el("span", { class: "muted" }, "–");
    const load = drone.connected ? drone.load[0].toFixed(2) : "–";
    return el(
      "tr",
      { "data-drone": drone.name },
      el("td", {}, el("span", { class: "drone-name" }, drone.name), el("span", { class: "drone-host" }, drone.hostname || "")),
      el("td", {}, el("span", { class: `pill pill-${drone.status}` }, drone.status)),
      el("td", {}, drone.drone_type || "unknown"),
      el("td", { class: "num" }, String(drone.cores)),
      el("td", { class: "num" }, load),
      el("td", { class: "num" }, drone.connected ? ping(drone.ping_latency_ms) : "–"),
      el("td", { class: "muted" }, ago(drone.last_heartbeat_at, now)),
      el("td", { class: "muted" }, drone.network || "–"),
      el("td", { class: "actions" }, terminal),
    );
  }

  function render(drones) {
    const now = Date.now();
    drones.sort(
      (a, b) =>
        STATUS_ORDER.indexOf(a.status) - STATUS_ORDER.indexOf(b.status) || a.name.localeCompare(b.name),
    );
    body.replaceChildren(...drones.map((d) => row(d, now)));
    empty.hidden = drones.length > 0;
    table.hidden = drones.length === 0;
    const online = drones.filter((d) => d.status === "online");
    const cores = online.reduce((sum, d) => sum + d.cores, 0);
    summary.textContent =
      `${drones.length} drone${drones.length === 1 ? "" : "s"} · ${online.length} online · ` +
      `${cores} core${cores === 1 ? "" : "s"} ready`;
    live.textContent = `Live · ${new Date(now).toLocaleTimeString()}`;
    live.classList.remove("stale");
  }

  async function poll(round) {
    timer = null;
    try {
      const { drones } = await get("/admin/api/drones");
      problem.hidden = true;
      render(drones);
    } catch (error) {
      problem.textContent = `Could not load the drones: ${error.message}`;
      problem.hidden = false;
      live.classList.add("stale");
    }
    // One loop at a time: a loop from before a hide and show stops here.
    if (active && round === rounds) timer = window.setTimeout(poll, POLL_MS, round);
  }

  return {
    el: page,
    show() {
      if (active) return;
      active = true;
      rounds += 1;
      poll(rounds);
    },
    hide() {
      active = false;
      if (timer !== null) window.clearTimeout(timer);
      timer = null;
    },
  };
}
