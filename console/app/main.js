// The console's shell: navigation, hash routing, the session.
//
// A page is one entry of PAGES and one module in pages/ that exports
// create(ctx) -> { el, show(params), hide() }. Pages are created on first
// visit and kept (a terminal keeps its shells while another page shows).

import { ApiError, loadSession, post } from "./api.js";

// css: an optional stylesheet of the page's own (app/pages/<id>.css), linked on first visit.
const PAGES = [
  { id: "topology", title: "Topology", icon: "topology", module: "./pages/topology.js", css: true },
  { id: "drones", title: "Drones", icon: "drones", module: "./pages/drones.js" },
  { id: "terminal", title: "Terminal", icon: "terminal", module: "./pages/terminal.js" },
  { id: "logs", title: "Logs", icon: "logs", module: "./pages/logs.js", css: true },
  { id: "queue", title: "Queue", icon: "queue", module: "./pages/queue.js", css: true },
  { id: "releases", title: "Releases", icon: "releases", module: "./pages/releases.js", css: true },
  { id: "binhosts", title: "Binhosts", icon: "binhosts", module: "./pages/binhosts.js", css: true },
  { id: "events", title: "Events", icon: "events", module: "./pages/events.js", css: true },
  { id: "protocol", title: "Protocol", icon: "protocol", module: "./pages/protocol.js", css: true },
  { id: "testbuilds", title: "Test builds", icon: "testbuilds", module: "./pages/testbuilds.js", css: true },
];

const ICONS = {
  drones:
    '<rect x="3" y="4" width="18" height="6" rx="1.5"/><rect x="3" y="14" width="18" height="6" rx="1.5"/>' +
    '<circle cx="7" cy="7" r="0.9" fill="currentColor"/><circle cx="7" cy="17" r="0.9" fill="currentColor"/>',
  terminal: '<rect x="3" y="4" width="18" height="16" rx="2"/><path d="M7 9l3 3-3 3M12.5 15H17"/>',
  topology:
    '<circle cx="12" cy="12" r="2.5"/><circle cx="4.5" cy="5.5" r="1.8"/><circle cx="19.5" cy="5.5" r="1.8"/>' +
    '<circle cx="4.5" cy="18.5" r="1.8"/><circle cx="19.5" cy="18.5" r="1.8"/>' +
    '<path d="M6 7l4.2 3.4M18 7l-4.2 3.4M6 17l4.2-3.4M18 17l-4.2-3.4"/>',
  logs: '<path d="M6 3h9l4 4v14H6z"/><path d="M15 3v4h4M9 11h7M9 14.5h7M9 18h4"/>',
  queue: '<path d="M4 6h16M4 12h16M4 18h10"/><circle cx="19" cy="18" r="1.2" fill="currentColor"/>',
  releases:
    '<path d="M12 3l8 4.5v9L12 21l-8-4.5v-9z"/><path d="M4 7.5l8 4.5 8-4.5M12 12v9"/>',
  binhosts:
    '<ellipse cx="12" cy="5.5" rx="7" ry="2.5"/><path d="M5 5.5v5c0 1.4 3.1 2.5 7 2.5s7-1.1 7-2.5v-5"/>' +
    '<path d="M12 13v4M5 20h14M12 17a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3z"/>',
  events: '<path d="M3 12h4l2.5-6 5 12 2.5-6h4"/>',
  protocol: '<path d="M4 7h13l-3-3M20 17H7l3 3"/>',
  testbuilds: '<path d="M9.5 3h5M10.5 3v6.2L5.2 18.4A1.7 1.7 0 0 0 6.7 21h10.6a1.7 1.7 0 0 0 1.5-2.6l-5.3-9.2V3"/><path d="M7.6 15h8.8"/>',
};

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const created = new Map();
let shown = null;

function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.classList.add("icon");
  svg.innerHTML = ICONS[name] ?? "";
  return svg;
}

function buildNav() {
  PAGES.forEach((page, i) => {
    const link = document.createElement("a");
    link.href = `#/${page.id}`;
    link.dataset.page = page.id;
    link.title = i < 10 ? `${page.title} (Alt+${(i + 1) % 10})` : page.title;
    link.append(icon(page.icon), document.createTextNode(page.title));
    const item = document.createElement("li");
    item.append(link);
    nav.append(item);
  });
}

/** "#/terminal?drone=x" -> { id: "terminal", params: {drone: "x"} } */
function parseHash() {
  const hash = window.location.hash.replace(/^#\/?/, "");
  const [id, query = ""] = hash.split("?", 2);
  return { id, params: Object.fromEntries(new URLSearchParams(query)) };
}

const ctx = {
  go(id, params = {}) {
    const query = new URLSearchParams(params).toString();
    window.location.hash = `#/${id}${query ? `?${query}` : ""}`;
  },
  /** Drop parameters from the address without routing again (a reload must not repeat them). */
  settle(id) {
    window.history.replaceState(null, "", `#/${id}`);
  },
};

/** Counts navigations: a page whose module loads after a later navigation must not be shown. */
let navigations = 0;

async function route() {
  const navigation = ++navigations;
  const { id, params } = parseHash();
  const page = PAGES.find((p) => p.id === id);
  if (!page) {
    window.location.replace(`#/${PAGES[0].id}`);
    return;
  }
  let view = created.get(page.id);
  if (!view) {
    if (page.css && !document.querySelector(`link[data-page="${page.id}"]`)) {
      const link = document.createElement("link");
      link.rel = "stylesheet";
      link.href = `/app/pages/${page.id}.css`;
      link.dataset.page = page.id;
      document.head.append(link);
    }
    const module = await import(page.module);
    // Two navigations to the same page can both have waited for its module.
    view = created.get(page.id);
    if (!view) {
      view = module.create(ctx);
      view.el.hidden = true;
      main.append(view.el);
      created.set(page.id, view);
    }
  }
  // The first page's module can load after a click has already asked for another page.
  if (navigation !== navigations) return;
  if (shown && shown !== view) {
    shown.hide();
    shown.el.hidden = true;
  }
  for (const link of nav.querySelectorAll("a")) {
    if (link.dataset.page === page.id) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${page.title} · Build Swarm`;
  view.el.hidden = false;
  shown = view;
  view.show(params);
}

function keys(event) {
  // Alt+1..9, then Alt+0: the pages in navigation order (also from inside a terminal).
  if (event.altKey && !event.ctrlKey && !event.metaKey && /^Digit[0-9]$/.test(event.code)) {
    const page = PAGES[(Number(event.code.slice(5)) + 9) % 10];
    if (page) {
      event.preventDefault();
      event.stopPropagation();
      ctx.go(page.id);
    }
  }
}

async function logout() {
  try {
    await post("/admin/api/logout");
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
  }
  window.location.replace("/login");
}

async function start() {
  buildNav();
  document.getElementById("logout").addEventListener("click", logout);
  window.addEventListener("keydown", keys, true);
  window.addEventListener("hashchange", route);
  try {
    const session = await loadSession();
    document.getElementById("who").textContent = session.key;
  } catch (error) {
    // A 401 is already on its way to the login page.
    if (error.status !== 401) {
      const banner = document.createElement("div");
      banner.className = "banner banner-error";
      banner.setAttribute("role", "alert");
      banner.textContent = `The console cannot start: ${error.message}. Reload to try again.`;
      main.replaceChildren(banner);
    }
    return;
  }
  await route();
}

start();
