// Logs: the controller's own log or a drone's (agent, build/<job>,
// portage/<category>/<package>), tailed live over /ws/logs/...;
// controller/web/logs.py documents the messages.
//
// A browser cannot read the answer to a refused websocket upgrade, so the
// source is first asked for over HTTP with lines=0: an unknown source or
// drone shows the controller's own message. The view keeps the newest
// MAX_LINES lines; text arrives in pieces that may split a line, and is
// laid out once per frame.

import { ApiError, get, liveSocket } from "../api.js";
import { fleet } from "../fleet.js";
import { el } from "../ui.js";

const CONTROL_PLANE = "control-plane";
const MAX_LINES = 5000;
const MAX_PARTIAL = 64 * 1024; // a "line" longer than this is shown in parts (a log without newlines)
const BACKLOGS = [100, 500, 1000, 5000];
const DEFAULT_BACKLOG = 500;
const AT_BOTTOM_PX = 8;
const LINE_RE = /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d{3}) (DEBUG|INFO|WARNING|ERROR|CRITICAL)(\s+)([\w.-]+): (.*)$/s;
const JOB_EVENTS = "job_done,job_failed_on_drone,job_requeued";

/** "app-misc/hello-2.10-r1" -> "portage/app-misc/hello" (null if it is not shaped like a CPV). */
function portageSource(cpv) {
  const match = /^([A-Za-z0-9+_][A-Za-z0-9+_.-]*)\/([A-Za-z0-9+_][A-Za-z0-9+_-]*?)-\d[^/]*$/.exec(cpv ?? "");
  return match ? `portage/${match[1]}/${match[2]}` : null;
}

/** One log line, its logging prefix (time, level, logger) in spans of their own. */
function lineNode(text) {
  const match = LINE_RE.exec(text);
  if (!match) return el("div", { class: "log-line" }, text);
  const [, time, level, pad, logger, message] = match;
  return el(
    "div",
    { class: `log-line log-${level.toLowerCase()}` },
    el("span", { class: "log-time" }, time),
    " ",
    el("span", { class: "log-level" }, level),
    pad,
    el("span", { class: "log-logger" }, logger),
    ": ",
    message,
  );
}

export function create(ctx) {
  const target = el("select", { id: "logs-target", "aria-label": "Log of" });
  const source = el("input", {
    id: "logs-source",
    class: "logs-input",
    type: "text",
    list: "logs-sources",
    placeholder: "agent, build/<job id>, portage/<category>/<package>",
    "aria-label": "Source",
    autocomplete: "off",
    spellcheck: "false",
    value: "agent",
  });
  const sources = el("datalist", { id: "logs-sources" });
  const backlog = el(
    "select",
    { id: "logs-backlog", "aria-label": "Lines from before" },
    ...BACKLOGS.map((n) => el("option", { value: String(n) }, `last ${n.toLocaleString()} lines`)),
  );
  backlog.value = String(DEFAULT_BACKLOG);
  const openButton = el("button", { class: "btn btn-primary", type: "submit" }, "Tail");
  const form = el("form", { class: "logs-form" }, target, source, sources, backlog, openButton);

  const followButton = el(
    "button",
    { class: "btn btn-small logs-follow", type: "button", "aria-pressed": "true", title: "Keep the newest line in view" },
    "Follow",
  );
  const clearButton = el("button", { class: "btn btn-small btn-quiet", type: "button", title: "Empty the view (the log goes on)" }, "Clear");
  const newer = el("button", { class: "logs-newer", type: "button", hidden: "" }, "");
  const title = el("span", { class: "logs-title" }, "");
  const state = el("span", { class: "live stale", "aria-live": "polite" }, "Not connected");
  const counter = el("span", { class: "logs-count muted" }, "");
  const problem = el("div", { class: "banner banner-error", role: "alert", hidden: "" });
  const ended = el("div", { class: "logs-ended", role: "status", hidden: "" });
  const lines = el("div", { class: "logs-lines" });
  const partialLine = el("div", { class: "log-line log-partial" });
  const view = el(
    "div",
    { class: "logs-view", id: "logs-view", role: "log", "aria-live": "off", tabindex: "0", "aria-label": "Log text", "data-state": "idle" },
    lines,
    partialLine,
  );
  const page = el(
    "section",
    { class: "page page-fill logs-page", "aria-labelledby": "logs-title" },
    el(
      "header",
      { class: "page-head" },
      el(
        "div",
        {},
        el("h1", { id: "logs-title" }, "Logs"),
        el("p", { class: "page-sub" }, "The controller's log and the drones' agent, build and Portage logs, live"),
      ),
      form,
    ),
    problem,
    el(
      "div",
      { class: "logs-frame" },
      el("div", { class: "logs-bar" }, el("div", { class: "logs-bar-left" }, title, state), el("div", { class: "logs-bar-right" }, counter, clearButton, followButton)),
      el("div", { class: "logs-area" }, view, newer),
      ended,
    ),
  );

  let current = null; // { drone: string|null, source: string }
  /** @type {import("/common/live.js").LiveSocket | null} */
  let stream = null;
  let generation = 0;
  let active = false;
  let follow = true;
  let partial = "";
  let pending = []; // lines (strings) and notices ({notice}) not laid out yet
  let frame = null;
  let shownLines = 0;
  let dropped = 0;
  let unseen = 0;

  // -- the form -------------------------------------------------------------

  async function listTargets() {
    try {
      const drones = await fleet.fetch();
      const chosen = target.value;
      const names = drones.map((d) => d.name).sort();
      target.replaceChildren(
        el("option", { value: CONTROL_PLANE }, "Controller (control-plane)"),
        ...(names.length ? [el("optgroup", { label: "Drones" }, ...names.map((n) => el("option", { value: n }, n)))] : []),
      );
      const want = chosen || (current ? current.drone ?? CONTROL_PLANE : CONTROL_PLANE);
      if (want !== CONTROL_PLANE && !names.includes(want)) target.append(el("option", { value: want }, want));
      target.value = want;
      sourceEnabled();
      return drones;
    } catch (error) {
      if (!target.options.length) target.append(el("option", { value: CONTROL_PLANE }, "Controller (control-plane)"));
      return [];
    }
  }

  function sourceEnabled() {
    const plane = target.value === CONTROL_PLANE;
    source.disabled = plane;
    source.placeholder = plane ? "the controller's own log" : "agent, build/<job id>, portage/<category>/<package>";
  }

  /** Suggestions for the drone's sources: its agent log, its running and recent jobs and their packages. */
  async function suggest(drone) {
    const options = new Map([["agent", "the agent's own log"]]);
    if (!drone) {
      sources.replaceChildren();
      return;
    }
    try {
      const [drones, { events }] = await Promise.all([
        fleet.fetch(),
        get(`/admin/api/events?drone=${encodeURIComponent(drone)}&type=${JOB_EVENTS}&limit=30`),
      ]);
      const running = drones.find((d) => d.name === drone)?.current_job_id;
      if (running) options.set(`build/${running}`, "building now");
      for (const event of events.reverse()) {
        const job = event.data?.job_id;
        const cpv = event.data?.cpv;
        if (job && !options.has(`build/${job}`)) options.set(`build/${job}`, `${cpv ?? "job"} · ${event.type.replace(/_/g, " ")}`);
        const portage = portageSource(cpv);
        if (portage && !options.has(portage)) options.set(portage, `Portage's log of ${cpv}`);
      }
    } catch {
      // suggestions only: the field takes any source
    }
    if (target.value !== drone) return;
    sources.replaceChildren(...[...options].map(([value, label]) => el("option", { value, label })));
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const drone = target.value === CONTROL_PLANE ? null : target.value;
    const wanted = { drone, source: drone ? source.value.trim() : CONTROL_PLANE };
    if (drone && !wanted.source) {
      showProblem("Choose a source: agent, build/<job id> or portage/<category>/<package>.");
      source.focus();
      return;
    }
    const params = drone ? { drone, source: wanted.source } : {};
    const hash = `#/logs${Object.keys(params).length ? `?${new URLSearchParams(params)}` : ""}`;
    if (window.location.hash === hash) open(wanted);
    else ctx.go("logs", params); // show() opens it, and the address names the log
  });
  target.addEventListener("change", () => {
    sourceEnabled();
    if (target.value !== CONTROL_PLANE) suggest(target.value);
  });
  target.addEventListener("focus", listTargets);
  backlog.addEventListener("change", () => current && open(current));

  // -- the view -------------------------------------------------------------

  function atBottom() {
    return view.scrollHeight - view.scrollTop - view.clientHeight <= AT_BOTTOM_PX;
  }

  function setFollow(on) {
    follow = on;
    followButton.setAttribute("aria-pressed", String(on));
    view.dataset.follow = on ? "1" : "0";
    if (on) {
      unseen = 0;
      newer.hidden = true;
      view.scrollTop = view.scrollHeight;
    }
  }

  followButton.addEventListener("click", () => setFollow(!follow));
  newer.addEventListener("click", () => setFollow(true));
  clearButton.addEventListener("click", () => {
    lines.replaceChildren();
    shownLines = 0;
    dropped = 0;
    unseen = 0;
    newer.hidden = true;
    count();
  });
  view.addEventListener("scroll", () => {
    // Scrolling up stops following; back at the bottom, it follows again.
    const bottom = atBottom();
    if (follow && !bottom) setFollow(false);
    else if (!follow && bottom) setFollow(true);
  });
  view.addEventListener("keydown", (event) => {
    if (event.key === "End" && (event.ctrlKey || !event.shiftKey)) setFollow(true);
  });

  function count() {
    view.dataset.lines = String(shownLines);
    counter.textContent =
      `${shownLines.toLocaleString()} line${shownLines === 1 ? "" : "s"}` +
      (dropped ? ` · ${dropped.toLocaleString()} older dropped` : "");
  }

  function schedule() {
    if (frame === null && active) frame = window.requestAnimationFrame(flush);
  }

  function addText(text) {
    const parts = (partial + text).split("\n");
    partial = parts.pop();
    while (partial.length > MAX_PARTIAL) {
      parts.push(partial.slice(0, MAX_PARTIAL));
      partial = partial.slice(MAX_PARTIAL);
    }
    for (const line of parts) pending.push(line.endsWith("\r") ? line.slice(0, -1) : line);
    if (pending.length > MAX_LINES) pending.splice(0, pending.length - MAX_LINES);
    schedule();
  }

  function addNotice(text, kind = "notice") {
    if (partial) {
      pending.push(partial); // a notice is between pieces: the piece before it has ended
      partial = "";
    }
    pending.push({ notice: text, kind });
    schedule();
  }

  function flush() {
    frame = null;
    if (!pending.length && partialLine.textContent === partial) return;
    const items = pending;
    pending = [];
    const fragment = document.createDocumentFragment();
    for (const item of items) {
      if (typeof item === "string") {
        fragment.append(lineNode(item));
        shownLines += 1;
      } else {
        fragment.append(el("div", { class: `log-notice log-notice-${item.kind}`, role: "note" }, item.notice));
      }
    }
    lines.append(fragment);
    partialLine.textContent = partial;
    const grown = follow ? 0 : view.scrollHeight;
    // Bounded: the oldest lines (and the notices among them) go.
    let extra = lines.childElementCount - MAX_LINES;
    while (extra > 0 && lines.firstChild) {
      if (lines.firstChild.classList.contains("log-line")) {
        shownLines -= 1;
        dropped += 1;
      }
      lines.firstChild.remove();
      extra -= 1;
    }
    if (follow) {
      view.scrollTop = view.scrollHeight;
    } else {
      // Someone reading further up keeps their place while the top is trimmed.
      const removed = grown - view.scrollHeight;
      if (removed > 0) view.scrollTop -= removed;
      const added = items.filter((i) => typeof i === "string").length;
      if (added) {
        unseen += added;
        newer.textContent = `${unseen.toLocaleString()} new line${unseen === 1 ? "" : "s"} · follow`;
        newer.hidden = false;
      }
    }
    count();
  }

  function resetView() {
    if (frame !== null) window.cancelAnimationFrame(frame);
    frame = null;
    pending = [];
    partial = "";
    partialLine.textContent = "";
    lines.replaceChildren();
    shownLines = 0;
    dropped = 0;
    unseen = 0;
    newer.hidden = true;
    setFollow(true);
    count();
  }

  // -- the stream -----------------------------------------------------------

  function setState(name, text) {
    view.dataset.state = name;
    state.textContent = text;
    state.classList.toggle("stale", name !== "live");
  }

  function showProblem(text) {
    problem.textContent = text;
    problem.hidden = false;
  }

  function showEnded(text, canRetry) {
    ended.replaceChildren(el("span", {}, text));
    if (canRetry) {
      ended.append(el("button", { class: "btn btn-small", type: "button", onclick: () => current && open(current) }, "Tail again"));
    }
    ended.hidden = false;
  }

  function closeSocket() {
    const old = stream;
    stream = null;
    old?.stop();
  }

  function label(wanted) {
    return wanted.drone ? `${wanted.drone} · ${wanted.source}` : "controller · control-plane";
  }

  async function open(wanted) {
    closeSocket();
    generation += 1;
    const mine = generation;
    current = wanted;
    problem.hidden = true;
    ended.hidden = true;
    resetView();
    title.textContent = label(wanted);
    setState("connecting", "Connecting…");
    const lineCount = Number(backlog.value) || DEFAULT_BACKLOG;
    const query = new URLSearchParams({ lines: "0" });
    let check;
    let path;
    if (wanted.drone) {
      query.set("source", wanted.source);
      check = `/admin/api/drones/${encodeURIComponent(wanted.drone)}/logs?${query}`;
      path = `/ws/logs/drones/${encodeURIComponent(wanted.drone)}`;
    } else {
      check = `/admin/api/logs/control-plane?${query}`;
      path = "/ws/logs/control-plane";
    }
    try {
      await get(check);
    } catch (error) {
      if (mine !== generation) return;
      setState("error", "Not connected");
      showProblem(error instanceof ApiError ? error.message : String(error));
      return;
    }
    if (mine !== generation || !active) return;
    query.set("lines", String(lineCount));
    query.set("follow", "1");
    // Not retried when lost (the page offers to tail again); closed while
    // the page is hidden and opened again when it is back, which sends the
    // backlog again: the view starts afresh then.
    let opened = false;
    let connects = 0;
    stream = liveSocket(() => `${path}?${query}`, {
      reconnect: false,
      onConnect() {
        if (connects++ > 0) resetView();
      },
      onMessage(message) {
        if (message.type === "data") addText(message.text ?? "");
        else if (message.type === "notice") addNotice(message.text ?? "", /rotated|truncated/.test(message.text ?? "") ? "warn" : "notice");
        else if (message.type === "end") addNotice("end of the log", "notice");
      },
      onState(status) {
        if (status.state === "connecting") setState("connecting", "Connecting…");
        else if (status.state === "live") {
          opened = true;
          setState("live", "Live");
        } else if (status.state === "hidden") setState("hidden", "Paused while the page is hidden");
        else if (status.state === "ended") {
          setState("ended", "Stopped");
          const close = status.close;
          if (!opened) {
            showEnded(`The controller refused to tail ${label(wanted)}.`, true);
          } else {
            const why = close?.reason ? `: ${close.reason}` : close?.code === 1006 ? ": the connection was lost" : "";
            showEnded(`The log stream ended${why}.`, true);
          }
        }
      },
    });
    stream.start();
  }

  function paramsTarget(params) {
    if (params.drone && params.drone !== CONTROL_PLANE) return { drone: params.drone, source: params.source || "agent" };
    return { drone: null, source: CONTROL_PLANE };
  }

  return {
    el: page,
    async show(params) {
      active = true;
      const wanted = paramsTarget(params);
      if (wanted.drone) {
        target.value = wanted.drone;
        source.value = wanted.source;
      }
      await listTargets();
      if (!active) return;
      target.value = wanted.drone ?? CONTROL_PLANE;
      sourceEnabled();
      if (wanted.drone) {
        source.value = wanted.source;
        suggest(wanted.drone);
      }
      open(wanted); // hide() closed the stream: a visit tails afresh
    },
    hide() {
      active = false;
      generation += 1;
      closeSocket();
      if (frame !== null) window.cancelAnimationFrame(frame);
      frame = null;
      if (["live", "connecting", "hidden"].includes(view.dataset.state ?? "")) {
        setState("ended", "Stopped");
        showEnded("Stopped while another page was shown.", true);
      }
    },
  };
}
