// The public status page: read-only, from the public tier's own API only
// (/api/v1/*, /releases.json). Polls every few seconds while the tab is
// visible (common/live.js: backing off while the controller cannot be
// reached); the public tier has no websocket.

import { Poller } from "/common/live.js";
import { Waveform } from "/common/waveform.js";

const POLL_MS = 3000;
const RELEASES_MS = 60_000; // a promote shows within a minute
const BINHOSTS_MS = 15_000; // a mirror's state changes with a push or a health check
const TESTBUILDS_MS = 10_000; // a test build waits and runs for minutes
const TESTBUILDS_SHOWN = 10;
const WAVE_MIN_MS = 15_000; // new events refresh the waveform at most this often
const MAX_EVENTS = 40;
const MOMENT_LIMIT = 200;
const STATUS_ORDER = ["online", "suspect", "unhealthy", "offline"];

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function getJson(path) {
  let response;
  try {
    response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  } catch {
    throw new HttpError(0, "the controller cannot be reached");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new HttpError(response.status, data?.error?.message ?? `the controller answered ${response.status}`);
  return data;
}

// -- formatting ------------------------------------------------------------

const plural = (n, word, many = `${word}s`) => `${n} ${n === 1 ? word : many}`;
const pad2 = (n) => String(n).padStart(2, "0");
const clock = (d) => `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
const clockSec = (d) => `${clock(d)}:${pad2(d.getSeconds())}`;

function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

function ago(iso) {
  if (!iso) return "never";
  return `${duration((Date.now() - Date.parse(iso)) / 1000)} ago`;
}

function when(iso) {
  const d = new Date(iso);
  const today = d.toDateString() === new Date().toDateString();
  return today ? clockSec(d) : `${d.toLocaleDateString(undefined, { month: "short", day: "numeric" })} ${clock(d)}`;
}

function tone(type) {
  if (/(failed|unhealthy|disconnected|alert|error|revoked|stopped)$/.test(type)) return "bad";
  if (/(suspect|draining|grounded|requeued|holds|heal_action)$/.test(type) || type.startsWith("heal")) return "warn";
  if (/(connected|online|healthy|recovered|done|complete|started|enrolled|ungrounded|undrained)$/.test(type)) return "ok";
  return "info";
}

// -- status ----------------------------------------------------------------

function renderStatus(status) {
  const d = status.drones;
  const c = status.controller;
  let headline;
  let health;
  if (d.total === 0) {
    headline = "No drone has joined this swarm yet";
    health = "idle";
  } else if (d.online === d.total) {
    headline = d.total === 1 ? "The drone is online" : `All ${d.total} drones are online`;
    health = "ok";
  } else if (d.online === 0) {
    headline = `No drone is online (${d.total} known)`;
    health = "bad";
  } else {
    headline = `${d.online} of ${d.total} drones online`;
    health = "warn";
  }
  $("headline-text").textContent = headline;
  $("health-dot").dataset.health = health;
  $("controller").textContent = `Controller ${c.version} · started ${when(c.started_at)}`;
  $("stat-drones").replaceChildren(String(d.online), el("span", { class: "of" }, ` / ${d.total}`));
  $("stat-cores").textContent = String(status.cores_online);
  $("stat-building").textContent = String(status.emerge_running);
  $("stat-uptime").textContent = duration(c.uptime_s);
  $("stats").dataset.version = c.version;
}

// -- builds ----------------------------------------------------------------

/** @type {[string, (jobs: any) => number, string][]} */
const SEGMENTS = [
  ["done", (j) => j.done, "built"],
  ["running", (j) => j.assigned + j.building, "building"],
  ["failed", (j) => j.failed, "failed"],
  ["waiting", (j) => j.queued + j.blocked, "waiting"],
  ["cancelled", (j) => j.cancelled, "cancelled"],
];

function progressBar(session) {
  const bar = el("div", {
    class: "progress",
    role: "progressbar",
    "aria-label": `${session.name}: packages built`,
    "aria-valuemin": "0",
    "aria-valuemax": String(session.total),
    "aria-valuenow": String(session.jobs.done),
  });
  for (const [kind, count] of SEGMENTS) {
    const n = count(session.jobs);
    if (!n || !session.total) continue;
    const part = el("span", { class: `seg seg-${kind}` });
    part.style.width = `${(100 * n) / session.total}%`;
    bar.append(part);
  }
  return bar;
}

function renderBuild(session) {
  const box = $("build");
  const state = $("build-state");
  if (!session) {
    state.replaceChildren();
    box.replaceChildren(
      el("div", { class: "empty" }, el("strong", {}, "No build session yet."), el("span", {}, "When the admins queue packages, their progress shows here.")),
    );
    box.dataset.session = "";
    return;
  }
  state.replaceChildren(el("span", { class: `pill pill-${session.state}` }, session.state));
  const j = session.jobs;
  const legend = el("ul", { class: "legend" });
  for (const [kind, count, label] of SEGMENTS) {
    const n = count(j);
    if (n || kind === "done") legend.append(el("li", { class: `key key-${kind}` }, `${n} ${label}`));
  }
  const started = session.started_at ?? session.created_at;
  const timing = session.finished_at
    ? `finished ${ago(session.finished_at)}, took ${duration((Date.parse(session.finished_at) - Date.parse(started)) / 1000)}`
    : `started ${ago(started)}`;
  box.replaceChildren(
    el(
      "div",
      { class: "build-line" },
      el("strong", { class: "build-name" }, session.name),
      el("span", { class: "build-pct" }, `${Math.round(session.progress * 100)}%`),
    ),
    progressBar(session),
    el("div", { class: "build-meta" }, legend, el("span", { class: "muted" }, `${plural(session.total, "package")} · ${timing}`)),
  );
  box.dataset.session = session.id;
  box.dataset.state = session.state;
  box.dataset.done = String(j.done);
  box.dataset.total = String(session.total);
}

function renderSessions(sessions, currentId) {
  const others = sessions.filter((s) => s.id !== currentId).slice(0, 5);
  $("sessions").replaceChildren(
    ...others.map((s) =>
      el(
        "li",
        { "data-session": s.id },
        el("span", { class: "sess-name" }, s.name),
        el("span", { class: `pill pill-${s.state}` }, s.state),
        el("span", { class: "sess-count muted" }, `${s.jobs.done} / ${s.total}`),
        progressBar(s),
      ),
    ),
  );
  $("sessions").hidden = others.length === 0;
}

// -- drones ----------------------------------------------------------------

function drone(node) {
  const pills = [el("span", { class: `pill pill-${node.status}` }, node.status)];
  if (node.dispatch?.grounded) pills.push(el("span", { class: "pill pill-grounded", title: node.dispatch.grounded_until ? `until ${when(node.dispatch.grounded_until)}` : undefined }, "grounded"));
  if (node.dispatch?.draining) pills.push(el("span", { class: "pill pill-draining" }, "draining"));
  if (node.connected && node.emerge_running) pills.push(el("span", { class: "pill pill-building" }, "building"));
  const state = node.dispatch?.grounded ? "grounded" : node.dispatch?.draining ? "draining" : node.status;
  const facts = [node.drone_type || "unknown type", plural(node.cores, "core")];
  if (node.network) facts.push(node.network);
  const load = node.connected ? Math.min(1, node.load1 / Math.max(1, node.cores)) : 0;
  const meter = el("div", { class: "meter", title: `load ${node.load1.toFixed(2)} on ${plural(node.cores, "core")}` }, el("span"));
  meter.firstChild.style.width = `${Math.round(load * 100)}%`;
  return el(
    "li",
    { class: "drone", "data-drone": node.name, "data-state": state, "data-cores": String(node.cores) },
    el("div", { class: "drone-top" }, el("strong", { class: "drone-name" }, node.name), el("span", { class: "pills" }, ...pills)),
    el("div", { class: "drone-facts muted" }, facts.join(" · ")),
    node.connected
      ? el("div", { class: "drone-load" }, meter, el("span", { class: "muted num" }, `load ${node.load1.toFixed(2)}`))
      : el("div", { class: "drone-load muted" }, `last seen ${ago(node.last_seen_at)}`),
  );
}

function renderNodes(nodes) {
  nodes.sort((a, b) => STATUS_ORDER.indexOf(a.status) - STATUS_ORDER.indexOf(b.status) || a.name.localeCompare(b.name));
  const list = $("drones");
  if (nodes.length === 0) {
    list.replaceChildren(el("li", { class: "empty" }, el("strong", {}, "No drone yet."), el("span", {}, "Drones appear here once they enroll.")));
  } else {
    list.replaceChildren(...nodes.map(drone));
  }
  const cores = nodes.reduce((sum, n) => sum + n.cores, 0);
  $("drones-sub").textContent = `${plural(nodes.length, "drone")} · ${plural(cores, "core")}`;
}

// -- events ----------------------------------------------------------------

function eventItem(e) {
  return el(
    "li",
    { class: "event", "data-id": String(e.id), "data-type": e.type },
    el("time", { datetime: e.ts, title: new Date(e.ts).toLocaleString() }, when(e.ts)),
    el("span", { class: `type type-${tone(e.type)}` }, e.type.replaceAll("_", " ")),
    el("span", { class: "msg" }, e.drone_name ? el("strong", {}, e.drone_name) : null, e.drone_name ? " " : null, e.message),
  );
}

const events = { list: [], lastId: null, lastWave: 0 };

async function pollEvents() {
  const path = events.lastId === null ? `/api/v1/events?limit=${MAX_EVENTS}` : `/api/v1/events?since=${events.lastId}&limit=200`;
  const page = await getJson(path);
  const fresh = events.lastId !== null && page.last_id > events.lastId;
  events.lastId = page.last_id;
  if (page.events.length || events.list.length === 0) {
    events.list = [...page.events.slice().reverse(), ...events.list].slice(0, MAX_EVENTS);
    const box = $("events");
    if (events.list.length === 0) box.replaceChildren(el("li", { class: "empty" }, el("span", {}, "Nothing has happened yet.")));
    else box.replaceChildren(...events.list.map(eventItem));
  }
  // Something happened: let the waveform show it soon, not a minute later.
  if (fresh && Date.now() - events.lastWave > WAVE_MIN_MS) {
    events.lastWave = Date.now();
    wave.refresh();
  }
}

// -- the waveform and its moment -------------------------------------------

const moment = { seq: 0, timer: null };

function showMoment(m) {
  const panel = $("moment");
  window.clearTimeout(moment.timer);
  moment.seq += 1;
  if (m === null) {
    panel.hidden = true;
    delete panel.dataset.start;
    return;
  }
  const seq = moment.seq;
  panel.hidden = false;
  panel.dataset.state = "loading";
  $("moment-title").textContent = `${clock(m.start)}–${m.latest ? "now" : clock(m.end)}`;
  // While dragging, ask once the scrubber rests a moment; a release or a key asks at once.
  moment.timer = window.setTimeout(() => loadMoment(m, seq), m.final ? 0 : 150);
}

async function loadMoment(m, seq) {
  const panel = $("moment");
  let page;
  try {
    page = await getJson(`/api/v1/events?since=${encodeURIComponent(m.start.toISOString())}&limit=${MOMENT_LIMIT}`);
  } catch (error) {
    if (seq !== moment.seq) return;
    panel.dataset.state = "error";
    $("moment-events").replaceChildren(el("li", { class: "empty" }, `Could not load the events of this moment: ${error.message}`));
    return;
  }
  if (seq !== moment.seq) return; // the scrubber has moved on
  const end = m.end.getTime();
  const found = page.events.filter((e) => m.latest || Date.parse(e.ts) < end);
  const full = page.events.length === MOMENT_LIMIT && found.length === page.events.length;
  const day = m.start.toDateString() === new Date().toDateString() ? "" : `${m.start.toLocaleDateString(undefined, { weekday: "short" })} `;
  let title = `${day}${clock(m.start)}–${m.latest ? "now" : clock(m.end)} · ${plural(found.length, "event")}${full ? " (the first ones)" : ""}`;
  if (!m.latest && !full && m.count > found.length) title += ` · ${m.count - found.length} more for admins only`;
  $("moment-title").textContent = title;
  $("moment-events").replaceChildren(
    ...(found.length ? found.map(eventItem) : [el("li", { class: "empty" }, "No public event in this moment.")]),
  );
  panel.dataset.start = m.start.toISOString();
  panel.dataset.count = String(found.length);
  panel.dataset.state = "ready";
}

const wave = new Waveform($("wave"), {
  url: "/api/v1/activity",
  label: "Event activity over the last 24 hours",
  onScrub: showMoment,
  onLoad: (data) => {
    $("activity-total").textContent = `${plural(data.total, "event")} in 24 h`;
  },
});

// -- releases ----------------------------------------------------------------

/** An instant of the API (ISO text, or seconds since the epoch) as ISO text. */
function isoOf(t) {
  return typeof t === "number" ? new Date(t * 1000).toISOString() : t;
}

function day(t) {
  return new Date(isoOf(t)).toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
}

function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${n < 10 && i > 0 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

/** The current release, large, near the top: what a client upgrades to. */
function renderCurrent(release, state) {
  const box = $("release-now");
  box.dataset.state = state;
  box.dataset.release = release?.version ?? "";
  const shown = Boolean(release);
  $("release-facts").hidden = !shown;
  $("release-foot").hidden = !shown;
  const notes = $("release-notes");
  if (!release) {
    $("release-version").textContent =
      state === "error" ? "Releases could not be loaded" : state === "listed" ? "No release is current" : "No release yet";
    notes.hidden = state === "error";
    notes.textContent =
      state === "listed" ? "Releases have been cut; none has been promoted for clients yet." : "Signed, dated releases (vYYYY.MM.DD) of the binary packages appear here once one is promoted.";
    return;
  }
  $("release-version").textContent = release.version;
  const first = (release.notes || "").split("\n", 1)[0];
  notes.textContent = first;
  notes.title = release.notes || "";
  notes.hidden = !first;
  $("release-date").textContent = day(release.created_at);
  $("release-date").title = new Date(isoOf(release.created_at)).toLocaleString();
  $("release-packages").textContent = String(release.package_count);
  $("release-size").textContent = bytes(release.total_size);
  $("release-since").textContent = release.promoted_at ? `; current since ${when(isoOf(release.promoted_at))}` : "";
}

async function loadReleases() {
  const box = $("releases");
  let data;
  try {
    data = await getJson("/releases.json");
  } catch (error) {
    if (error.status === 404) {
      box.dataset.state = "none";
      renderCurrent(null, "none");
      box.replaceChildren(
        el("div", { class: "empty" }, el("strong", {}, "No release has been published yet."), el("span", {}, "Versioned releases (vYYYY.MM.DD) of the binary packages will be listed here.")),
      );
    } else {
      box.dataset.state = "error";
      renderCurrent(null, "error");
      box.replaceChildren(el("p", { class: "muted" }, `Releases could not be loaded: ${error.message}`));
    }
    return;
  }
  const releases = Array.isArray(data?.releases) ? data.releases : [];
  const current = releases.find((r) => r.current) ?? releases.find((r) => r.version === data?.current) ?? null;
  box.dataset.state = releases.length ? "listed" : "none";
  renderCurrent(current, current ? "current" : releases.length ? "listed" : "none");
  if (!releases.length) {
    box.replaceChildren(el("div", { class: "empty" }, el("strong", {}, "No release has been published yet.")));
    return;
  }
  box.replaceChildren(
    el(
      "ul",
      { class: "releases" },
      ...releases.slice(0, 10).map((r) => {
        const standing = r.current ? "current" : r.previous ? "previous" : "";
        const facts = [when(isoOf(r.created_at)), plural(r.package_count, "package"), bytes(r.total_size)];
        return el(
          "li",
          { "data-release": r.version, "data-standing": standing },
          el("strong", { class: "release-name" }, r.version),
          standing ? el("span", { class: `pill pill-${standing}` }, standing) : null,
          el("span", { class: "muted" }, facts.join(" · ")),
        );
      }),
    ),
  );
}

// -- binhosts ----------------------------------------------------------------

/**
 * Where the releases are published, and how each binhost stands. The card
 * stays hidden on a controller without the binhosts answer.
 */
async function loadBinhosts() {
  const card = $("binhosts-card");
  let data;
  try {
    data = await getJson("/api/v1/binhosts");
  } catch (error) {
    if (error.status === 404) card.hidden = true;
    else $("binhosts-sub").textContent = `could not be loaded: ${error.message}`;
    return;
  }
  const binhosts = Array.isArray(data?.binhosts) ? data.binhosts : [];
  card.hidden = false;
  card.dataset.current = data?.current ?? "";
  const healthy = binhosts.filter((b) => b.status === "healthy").length;
  $("binhosts-sub").textContent = `${plural(binhosts.length, "binhost")} · ${healthy} healthy`;
  $("binhosts").replaceChildren(
    ...binhosts.map((b) => {
      const networks = Array.isArray(b.networks) && b.networks.length ? b.networks.join(", ") : "every network";
      const behind = data?.current && b.release && b.release !== data.current;
      return el(
        "li",
        { class: "binhost", "data-binhost": b.name, "data-status": b.status },
        el("div", { class: "drone-top" }, el("strong", { class: "binhost-name" }, b.name), el("span", { class: `pill pill-bh-${b.status}` }, b.status)),
        el(
          "div",
          { class: "muted binhost-facts" },
          el("span", { class: "binhost-networks" }, networks),
          " · ",
          el("span", { class: `binhost-release${behind ? " binhost-behind" : ""}` }, b.release ?? "no release"),
        ),
      );
    }),
  );
}

// -- test builds ---------------------------------------------------------------

/** A test build's line in words: where it stands, or how it ended and when. */
function testBuildFacts(b) {
  if (b.state === "queued") {
    const place = b.position ? `#${b.position} in the queue` : "in the queue";
    return b.estimate_s !== null && b.estimate_s !== undefined ? `${place} · starts in about ${duration(b.estimate_s)}` : place;
  }
  if (b.state === "running") return `building on ${b.drone || "a drone"} · started ${ago(b.started_at)}`;
  const facts = [`ended ${ago(b.finished_at)}`];
  if (b.started_at && b.finished_at) facts.push(`took ${duration((Date.parse(b.finished_at) - Date.parse(b.started_at)) / 1000)}`);
  if (b.drone) facts.push(`on ${b.drone}`);
  if (b.state === "failed" && b.exit_code !== null && b.exit_code !== undefined) facts.push(`exit ${b.exit_code}`);
  return facts.join(" · ");
}

function testBuildItem(b) {
  const why = b.state === "failed" || b.state === "cancelled" ? (b.reason || "").split("\n", 1)[0] : "";
  const files = Array.isArray(b.packages) ? b.packages : [];
  return el(
    "li",
    { class: "testbuild", "data-testbuild": b.id, "data-state": b.state },
    el(
      "div",
      { class: "drone-top" },
      el("strong", { class: "testbuild-name" }, b.cpv || b.package, Array.isArray(b.use) && b.use.length ? el("span", { class: "muted testbuild-use" }, ` USE ${b.use.join(" ")}`) : null),
      el("span", { class: `pill pill-tb-${b.state}` }, b.state),
    ),
    el("div", { class: "muted testbuild-facts" }, `${b.user ? `asked by ${b.user} · ` : ""}${testBuildFacts(b)}`),
    why ? el("div", { class: "testbuild-why", title: b.reason }, why) : null,
    files.length
      ? el(
          "div",
          { class: "testbuild-files" },
          ...files.map((url) =>
            el("a", { href: url, title: "a test build: untested, never released" }, decodeURIComponent(url.split("/").pop() || url)),
          ),
        )
      : null,
  );
}

/** The newest test builds; the card stays hidden until there is one (or on a controller without them). */
async function loadTestBuilds() {
  const card = $("testbuilds-card");
  let data;
  try {
    data = await getJson(`/api/v1/test-builds?limit=${TESTBUILDS_SHOWN}`);
  } catch (error) {
    if (error.status === 404) card.hidden = true;
    else $("testbuilds-sub").textContent = `could not be loaded: ${error.message}`;
    return;
  }
  const builds = Array.isArray(data?.builds) ? data.builds : [];
  card.hidden = builds.length === 0;
  const waiting = builds.filter((b) => b.state === "queued").length;
  const running = builds.filter((b) => b.state === "running").length;
  $("testbuilds-sub").textContent = `${waiting} queued · ${running} running`;
  $("testbuilds").replaceChildren(...builds.map(testBuildItem));
}

// -- polling -----------------------------------------------------------------

let releasesAt = 0;
let binhostsAt = 0;
let testBuildsAt = 0;

/** One refresh of everything; throws (after drawing what did load) if a part failed. */
async function tick() {
  const [status, nodes, sessions, evts] = await Promise.allSettled([
    getJson("/api/v1/status"),
    getJson("/api/v1/nodes"),
    getJson("/api/v1/sessions"),
    pollEvents(),
  ]);
  if (status.status === "fulfilled") {
    renderStatus(status.value);
    renderBuild(status.value.session);
  }
  if (nodes.status === "fulfilled") renderNodes(nodes.value.nodes);
  if (sessions.status === "fulfilled") {
    renderSessions(sessions.value.sessions, status.status === "fulfilled" ? status.value.session?.id : undefined);
  }
  if (Date.now() - releasesAt > RELEASES_MS) {
    releasesAt = Date.now();
    loadReleases();
  }
  if (Date.now() - binhostsAt > BINHOSTS_MS) {
    binhostsAt = Date.now();
    loadBinhosts();
  }
  if (Date.now() - testBuildsAt > TESTBUILDS_MS) {
    testBuildsAt = Date.now();
    loadTestBuilds();
  }
  const failed = [status, nodes, sessions, evts].find((r) => r.status === "rejected");
  if (failed) throw failed.reason;
  const live = $("live");
  live.classList.remove("stale");
  live.textContent = `Live · ${clockSec(new Date())}`;
  $("problem").hidden = true;
}

const poller = new Poller(tick, {
  every: POLL_MS,
  onError(error, delay) {
    const live = $("live");
    live.classList.add("stale");
    live.textContent = "Reconnecting…";
    const problem = $("problem");
    const message = error instanceof Error ? error.message : String(error);
    problem.textContent = `The status could not be refreshed: ${message}. Trying again in ${Math.max(1, Math.round(delay / 1000))} s.`;
    problem.hidden = false;
  },
});

$("moment-close").addEventListener("click", () => {
  wave.scrubTo(null);
  wave.el.focus();
});

wave.show();
poller.start();
