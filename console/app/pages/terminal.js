// Terminal: root shells on drones, one tab each (xterm.js and its fit
// addon), over /ws/ssh/{drone}; controller/web/shells.py documents the
// messages. A shell runs under the drone's agent, or, with via=ssh, over
// ssh from the controller (the drone's ssh access setting): offered for a
// drone that has one, and the only way onto a drone whose agent is down. The open tabs and their session ids live in sessionStorage, so
// a reload, or a closed browser tab reopened within the controller's grace
// period, reattaches to the same shells and replays their recent screen.

import { FitAddon } from "/vendor/addon-fit.mjs";
import { Terminal } from "/vendor/xterm.mjs";
import { del, liveSocket } from "../api.js";
import { fleet } from "../fleet.js";
import { el } from "../ui.js";

const STORE = "swarm.console.terminals";
// Flow control as ttyd does it: xterm.js parses 5-35 MB/s, a drone prints
// faster. Bytes handed to xterm.js whose write callback has not run yet are
// in flight; above HIGH_WATER the controller is asked to pause the output,
// below LOW_WATER to resume it.
const HIGH_WATER = 1 << 20;
const LOW_WATER = 128 << 10;
const THEME = {
  background: "#0a0d13",
  foreground: "#d8dee9",
  cursor: "#a594ff",
  cursorAccent: "#0a0d13",
  selectionBackground: "#3b3f63",
  black: "#1c212b",
  red: "#f7768e",
  green: "#9ece6a",
  yellow: "#e0af68",
  blue: "#7aa2f7",
  magenta: "#bb9af7",
  cyan: "#7dcfff",
  white: "#c0caf5",
  brightBlack: "#565f89",
  brightRed: "#ff8fa3",
  brightGreen: "#b9f27c",
  brightYellow: "#ffc777",
  brightBlue: "#8db0ff",
  brightMagenta: "#c7a9ff",
  brightCyan: "#a4daff",
  brightWhite: "#eef1ff",
};
const encoder = new TextEncoder();

function exitText(message) {
  if (message.exit_code !== null && message.exit_code !== undefined) {
    return `Shell exited with status ${message.exit_code}`;
  }
  if (message.signal) return `Shell ended by signal ${message.signal}`;
  return "Shell ended";
}

let tabCount = 0;

/** One shell: its xterm.js, its websocket, its tab and pane. */
class Tab {
  constructor(page, drone, session = null, via = "agent") {
    this.page = page;
    this.drone = drone;
    this.via = via === "ssh" ? "ssh" : "agent";
    this.session = session;
    this.state = "connecting";
    /** @type {import("/common/live.js").LiveSocket | null} */
    this.socket = null;
    this.flow = null;
    this.id = `term-${++tabCount}`;

    this.statusText = el("span", { class: "term-status-text" });
    this.statusActions = el("span", { class: "term-status-actions" });
    this.status = el("div", { class: "term-status", role: "status", hidden: "" }, this.statusText, this.statusActions);
    this.host = el("div", { class: "term-host" });
    this.pane = el("div", { class: "term-pane", id: this.id, role: "tabpanel", hidden: "" }, this.host, this.status);

    this.dot = el("span", { class: "dot", "aria-hidden": "true" });
    this.label = el(
      "button",
      { class: "tab-label", role: "tab", type: "button", "aria-controls": this.id, "aria-selected": "false" },
      this.dot,
      el("span", { class: "tab-drone" }, drone),
      this.via === "ssh" ? el("span", { class: "tab-via", title: "over ssh from the controller, not through the agent" }, "ssh") : "",
    );
    this.label.addEventListener("click", () => page.activate(this));
    this.label.addEventListener("keydown", (event) => page.tabKeys(event, this));
    this.closeButton = el(
      "button",
      { class: "tab-close", type: "button", title: "End the shell and close the tab", "aria-label": `Close ${drone}` },
      "×",
    );
    this.closeButton.addEventListener("click", () => page.close(this));
    this.tab = el("div", { class: "tab", "data-state": this.state }, this.label, this.closeButton);

    this.term = new Terminal({
      fontFamily: '"DejaVu Sans Mono", "Cascadia Mono", Menlo, ui-monospace, monospace',
      fontSize: 14,
      lineHeight: 1.1,
      cursorBlink: true,
      scrollback: 5000,
      theme: THEME,
    });
    this.fit = new FitAddon();
    this.term.loadAddon(this.fit);
    this.term.onData((data) => this.sendBytes(encoder.encode(data)));
    this.term.onBinary((data) => this.sendBytes(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
    this.term.onResize(({ rows, cols }) => this.sendJson({ type: "resize", rows, cols }));
    this.opened = false;
  }

  /** Open xterm.js once the pane is on screen (it measures its cells). */
  mount() {
    if (this.opened) return;
    this.opened = true;
    this.term.open(this.host);
    this.fitNow();
  }

  fitNow() {
    if (!this.opened || this.pane.hidden || this.host.clientWidth === 0) return;
    try {
      this.fit.fit();
    } catch {
      // not laid out yet: the next resize fits
    }
  }

  setState(state) {
    this.state = state;
    this.tab.dataset.state = state;
    this.dot.title = state;
  }

  connect({ fresh = false } = {}) {
    if (fresh) this.session = null;
    this.term.reset(); // a reattach replays the screen from the start
    this.setState("connecting");
    const how = this.via === "ssh" ? " over SSH" : "";
    this.showStatus(this.session ? `Reattaching to ${this.drone}…` : `Opening a shell on ${this.drone}${how}…`);
    this.fitNow();
    const query = new URLSearchParams({ rows: String(this.term.rows), cols: String(this.term.cols) });
    if (this.session) query.set("session", this.session);
    else if (this.via === "ssh") query.set("via", "ssh");
    // One socket per shell connection: kept while the page or the browser
    // tab is hidden (a shell is not a feed), never retried by itself (the
    // tab offers to reattach).
    const flow = { socket: null, inFlight: 0, paused: false };
    const socket = liveSocket(() => `/ws/ssh/${encodeURIComponent(this.drone)}?${query}`, {
      reconnect: false,
      whileHidden: "keep",
      onMessage: (message) => this.control(message),
      onBinary: (data) => this.output(flow, new Uint8Array(data)),
      onState: (status) => {
        if (status.state === "ended" && this.socket === socket) {
          this.socket = null;
          if (this.state !== "ended") this.lost(Boolean(status.opened));
        }
      },
    });
    flow.socket = socket;
    this.socket?.stop();
    this.socket = socket;
    this.flow = flow;
    socket.start();
  }

  output(flow, chunk) {
    flow.inFlight += chunk.length;
    this.term.write(chunk, () => {
      flow.inFlight -= chunk.length;
      if (flow.paused && flow.inFlight < LOW_WATER) {
        flow.paused = false;
        flow.socket.send({ type: "resume" });
      }
    });
    if (!flow.paused && flow.inFlight > HIGH_WATER) {
      flow.paused = true;
      flow.socket.send({ type: "pause" });
    }
  }

  control(message) {
    switch (message.type) {
      case "session":
        this.session = message.session;
        this.setState("live");
        this.hideStatus();
        if (message.note) {
          this.label.title = `${this.drone}: ${message.note}`;
          if (!message.reattached) this.term.write(`\x1b[2m[${message.note}]\x1b[0m\r\n`);
        }
        this.page.save();
        // The size may have changed while the websocket was opening.
        if (message.rows !== this.term.rows || message.cols !== this.term.cols) {
          this.sendJson({ type: "resize", rows: this.term.rows, cols: this.term.cols });
        }
        break;
      case "exit":
        this.ended(message);
        break;
      case "detached":
        this.release(); // the controller closes it: that is no lost connection
        this.setState("lost");
        this.showStatus("This shell was opened in another window.", ["Take it back", () => this.connect()]);
        break;
      case "error":
        this.showStatus(message.message, ["Dismiss", () => this.hideStatus()]);
        break;
      default:
        break;
    }
  }

  ended(message) {
    this.setState("ended");
    this.release();
    const text = exitText(message);
    const why = message.message && !/^exited/.test(message.message) ? ` (${message.message})` : "";
    this.term.write(`\r\n\x1b[2m[${text.toLowerCase()}]\x1b[0m\r\n\x1b[?25l`); // and no cursor
    this.label.querySelector(".tab-drone").dataset.exit = message.exit_code ?? message.signal ?? "";
    this.showStatus(
      `${text}${why}.`,
      ["New shell", () => this.connect({ fresh: true })],
      ["Close tab", () => this.page.close(this)],
    );
    this.page.save();
  }

  lost(opened) {
    this.setState("lost");
    if (!opened) {
      this.showStatus(
        this.session
          ? `The shell on ${this.drone} cannot be reattached: it has ended, or the drone is gone.`
          : this.via === "ssh"
            ? `No shell could be opened on ${this.drone} over SSH: does it have an ssh access setting?`
            : `No shell could be opened on ${this.drone}: is it connected?`,
        ["New shell", () => this.connect({ fresh: true })],
        ["Close tab", () => this.page.close(this)],
      );
    } else {
      this.showStatus(
        `The connection to the controller was lost; the shell on ${this.drone} stays open for a while.`,
        ["Reattach", () => this.connect()],
        ["Close tab", () => this.page.close(this)],
      );
    }
  }

  /** Let go of the socket without calling it lost (the controller closes it). */
  release() {
    const socket = this.socket;
    this.socket = null;
    socket?.stop();
  }

  showStatus(text, ...actions) {
    this.statusText.textContent = text;
    this.statusActions.replaceChildren(
      ...actions.map(([label, action]) => el("button", { class: "btn btn-small", type: "button", onclick: action }, label)),
    );
    this.status.hidden = false;
  }

  hideStatus() {
    this.status.hidden = true;
  }

  sendBytes(bytes) {
    if (this.state === "live") this.socket?.send(bytes);
  }

  sendJson(message) {
    this.socket?.send(message);
  }

  /** End the shell (closing only the websocket would leave it for a reattach). */
  dispose() {
    if (this.socket) {
      this.sendJson({ type: "close" });
      this.release();
    } else if (this.session && this.state !== "ended") {
      del(`/admin/api/shells/${encodeURIComponent(this.session)}`).catch(() => {});
    }
    this.term.dispose();
    this.tab.remove();
    this.pane.remove();
  }
}

export function create(ctx) {
  const select = el("select", { id: "terminal-drone", "aria-label": "Drone" });
  const openButton = el("button", { class: "btn btn-primary", type: "submit" }, "Open shell");
  const form = el("form", { class: "term-open" }, select, openButton);
  const tabs = el("div", { class: "tabs", role: "tablist", "aria-label": "Shells" });
  const empty = el(
    "div",
    { class: "term-empty" },
    el("strong", {}, "No shell open"),
    el("span", {}, "Choose a drone and open a shell, or use Terminal on the Drones page."),
  );
  const area = el("div", { class: "term-area" }, empty);
  const page = el(
    "section",
    { class: "page page-fill", "aria-labelledby": "terminal-title" },
    el(
      "header",
      { class: "page-head" },
      el("div", {}, el("h1", { id: "terminal-title" }, "Terminal"), el("p", { class: "page-sub" }, "Root shells on drones, through the agent's own connection, or over SSH when the agent is down")),
      form,
    ),
    el("div", { class: "term-frame" }, tabs, area),
  );

  const open = [];
  let active = null;
  let restored = false;
  let fitQueued = false;

  const view = {
    save() {
      const kept = open.filter((t) => t.session && t.state !== "ended");
      const state = { tabs: kept.map((t) => ({ drone: t.drone, session: t.session, via: t.via })), active: kept.indexOf(active) };
      window.sessionStorage.setItem(STORE, JSON.stringify(state));
    },

    add(drone, session = null, via = "agent") {
      const tab = new Tab(view, drone, session, via);
      open.push(tab);
      tabs.append(tab.tab);
      area.append(tab.pane);
      sizes.observe(tab.host);
      empty.hidden = true;
      view.activate(tab);
      tab.connect();
      return tab;
    },

    activate(tab) {
      if (active && active !== tab) {
        active.pane.hidden = true;
        active.label.setAttribute("aria-selected", "false");
        active.label.tabIndex = -1;
      }
      active = tab;
      tab.pane.hidden = false;
      tab.label.setAttribute("aria-selected", "true");
      tab.label.tabIndex = 0;
      tab.mount();
      tab.fitNow();
      tab.term.focus();
      view.save();
    },

    close(tab) {
      const index = open.indexOf(tab);
      if (index < 0) return;
      open.splice(index, 1);
      sizes.unobserve(tab.host);
      tab.dispose();
      if (active === tab) {
        active = null;
        const next = open[Math.min(index, open.length - 1)];
        if (next) view.activate(next);
      }
      empty.hidden = open.length > 0;
      view.save();
    },

    tabKeys(event, tab) {
      const index = open.indexOf(tab);
      const moves = { ArrowLeft: index - 1, ArrowRight: index + 1, Home: 0, End: open.length - 1 };
      if (!(event.key in moves)) return;
      event.preventDefault();
      const next = open[(moves[event.key] + open.length) % open.length];
      view.activate(next);
      next.label.focus();
    },
  };

  async function listDrones() {
    try {
      const drones = await fleet.fetch();
      // Through the agent while it is connected; over SSH whenever the drone has ssh access.
      const choices = [];
      for (const d of [...drones].sort((a, b) => a.name.localeCompare(b.name))) {
        if (d.connected) choices.push({ value: `agent:${d.name}`, text: d.name });
        if (d.ssh_access) {
          const where = d.ssh_access === "local" ? "local shell" : "via SSH";
          const why = d.connected ? "" : `, ${d.status}`;
          choices.push({ value: `ssh:${d.name}`, text: `${d.name} (${where}${why})` });
        }
      }
      const chosen = select.value;
      select.replaceChildren(...choices.map((c) => el("option", { value: c.value }, c.text)));
      if (choices.some((c) => c.value === chosen)) select.value = chosen;
      if (!choices.length) select.append(el("option", { value: "", disabled: "" }, "no drone connected or reachable by SSH"));
      openButton.disabled = !choices.length;
    } catch {
      // the form stays as it was; the drones page says what is wrong
    }
  }

  function restore() {
    let state = null;
    try {
      state = JSON.parse(window.sessionStorage.getItem(STORE) ?? "null");
    } catch {
      state = null;
    }
    const entries = Array.isArray(state?.tabs) ? state.tabs : [];
    const made = entries
      .filter((t) => typeof t?.drone === "string" && typeof t?.session === "string")
      .map((t) => view.add(t.drone, t.session, t.via));
    const again = made[state?.active] ?? made.at(-1);
    if (again) view.activate(again);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const [via, ...name] = select.value.split(":");
    if (name.length) view.add(name.join(":"), null, via);
  });
  select.addEventListener("focus", listDrones);

  // Fit the shown terminal to its space whenever that changes size (the
  // window, a status bar shown or hidden); xterm.js reports the new size,
  // which goes to the shell as a resize message.
  const sizes = new ResizeObserver(() => {
    if (fitQueued) return;
    fitQueued = true;
    window.requestAnimationFrame(() => {
      fitQueued = false;
      active?.fitNow();
    });
  });

  return {
    el: page,
    show(params) {
      if (!restored) {
        restored = true;
        restore();
      }
      listDrones();
      if (params.drone) {
        ctx.settle("terminal");
        view.add(params.drone, null, params.via);
      } else if (active) {
        active.fitNow();
        active.term.focus();
      }
    },
    hide() {},
  };
}
