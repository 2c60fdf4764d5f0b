// Small pieces the fleet pages share: building elements, toasts, a
// confirmation dialog, an action menu, number formats and a page's
// poller. The styles are in console.css (.toast, .dialog, .menu).

import { Poller } from "/common/live.js";

/**
 * A page's poller: runs `load` now and every `every` ms (common/live.js),
 * marks the page's "Live" badge with the time of the last good round and
 * shows why in `problem` while rounds fail.
 * @param {() => Promise<unknown>} load
 * @param {{every: number, what: string, live: HTMLElement, problem: HTMLElement}} page
 */
export function pagePoller(load, { every, what, live, problem }) {
  return new Poller(
    async () => {
      await load();
      problem.hidden = true;
      live.textContent = `Live · ${new Date().toLocaleTimeString()}`;
      live.classList.remove("stale");
    },
    {
      every,
      onError(error) {
        problem.textContent = `Could not load ${what}: ${error instanceof Error ? error.message : error}`;
        problem.hidden = false;
        live.classList.add("stale");
      },
    },
  );
}

/** el("button", { class: "btn", onclick: f }, "Text") */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children);
  return node;
}

/** Set a node's text only when it changed (a poll redraws nothing that stayed). */
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "never";
  const seconds = Math.max(0, (now - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

export function ms(value) {
  if (value === null || value === undefined) return "–";
  return value < 10 ? `${value.toFixed(1)} ms` : `${Math.round(value)} ms`;
}

export function bytes(value) {
  if (value === null || value === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let n = value;
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${n < 10 && i > 0 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

const TOASTS_KEPT = 4;

/** Toasts in the corner: results and errors of actions, newest last, a few at a time. */
export class Toaster {
  constructor() {
    this.el = el("div", { class: "toasts", role: "status", "aria-live": "polite" });
  }

  /** kind: "ok" | "error" | "info"; a toast goes by itself (an error later), or by its ×. */
  show(kind, title, detail = "", attrs = {}) {
    const close = el("button", { class: "toast-close", type: "button", "aria-label": "Dismiss" }, "×");
    const toast = el(
      "div",
      { class: `toast toast-${kind}`, ...attrs },
      el("div", { class: "toast-body" }, el("strong", {}, title), detail ? el("span", {}, detail) : ""),
      close,
    );
    const timer = window.setTimeout(() => toast.remove(), kind === "error" ? 15000 : 7000);
    close.addEventListener("click", () => {
      window.clearTimeout(timer);
      toast.remove();
    });
    this.el.append(toast);
    while (this.el.children.length > TOASTS_KEPT) this.el.firstElementChild.remove();
    return toast;
  }
}

/** One modal <dialog> asking before a destructive action; ask() resolves true on confirm. */
export class ConfirmDialog {
  constructor() {
    this.title = el("h2", { class: "dialog-title" });
    this.text = el("p", { class: "dialog-text" });
    this.cancel = el("button", { class: "btn", type: "submit", value: "cancel", autofocus: true }, "Cancel");
    this.confirm = el("button", { class: "btn btn-danger", type: "submit", value: "confirm" }, "Confirm");
    this.el = el(
      "dialog",
      { class: "dialog" },
      el("form", { method: "dialog" }, this.title, this.text, el("div", { class: "dialog-actions" }, this.cancel, this.confirm)),
    );
    const id = `dialog-${Math.random().toString(36).slice(2, 8)}`;
    this.title.id = `${id}-title`;
    this.text.id = `${id}-text`;
    this.el.setAttribute("aria-labelledby", this.title.id);
    this.el.setAttribute("aria-describedby", this.text.id);
    this.pending = null;
    this.el.addEventListener("close", () => {
      const done = this.pending;
      this.pending = null;
      if (done) done(this.el.returnValue === "confirm");
    });
  }

  get open() {
    return this.el.open;
  }

  /** returnTo: where focus goes afterwards (default: what had it; a menu item is gone by then). */
  ask({ title, text, confirm = "Confirm", returnTo = null }) {
    if (this.pending) this.el.close("cancel");
    const opener = returnTo ?? document.activeElement;
    setText(this.title, title);
    setText(this.text, text);
    setText(this.confirm, confirm);
    this.el.returnValue = "";
    this.el.showModal();
    this.cancel.focus();
    return new Promise((resolve) => {
      this.pending = (yes) => {
        if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
        resolve(yes);
      };
    });
  }

  close() {
    if (this.el.open) this.el.close("cancel");
  }
}

let menuCount = 0;

/**
 * A button that opens a popover menu of items (buttons or links), keyboard
 * first: Enter/Space/ArrowDown open it on the first item, arrows move,
 * Home/End jump, Escape or Tab close it. The popover lives in the top layer,
 * so a scrolling table never clips it.
 */
export class ActionMenu {
  constructor(label, title, onOpen = () => {}) {
    this.id = `menu-${++menuCount}`;
    this.button = el(
      "button",
      {
        class: "btn btn-small btn-menu",
        type: "button",
        "aria-haspopup": "menu",
        "aria-expanded": "false",
        "aria-controls": this.id,
        title,
      },
      label,
    );
    this.list = el("div", { class: "menu", id: this.id, role: "menu", popover: "auto", "aria-label": title });
    this.button.addEventListener("click", () => this.toggle());
    this.button.addEventListener("keydown", (event) => {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        this.openMenu(event.key === "ArrowUp" ? -1 : 0);
      }
    });
    this.list.addEventListener("toggle", (event) => {
      const open = event.newState === "open";
      this.button.setAttribute("aria-expanded", String(open));
      if (open) onOpen();
      else if (this.list.contains(document.activeElement) || document.activeElement === document.body) {
        this.button.focus();
      }
    });
    this.list.addEventListener("keydown", (event) => this.keys(event));
  }

  get isOpen() {
    return this.list.matches(":popover-open");
  }

  items() {
    return [...this.list.querySelectorAll('[role="menuitem"]')];
  }

  /** An item: a link, or a button whose onSelect runs once the menu closed (not while aria-disabled). */
  add(item, onSelect = null) {
    item.setAttribute("role", "menuitem");
    item.tabIndex = -1;
    item.addEventListener("click", (event) => {
      if (item.getAttribute("aria-disabled") === "true") {
        event.preventDefault();
        return;
      }
      this.close();
      onSelect?.();
    });
    this.list.append(item);
    return item;
  }

  toggle() {
    if (this.isOpen) this.close();
    else this.openMenu(0);
  }

  openMenu(index) {
    if (!this.list.isConnected) return;
    if (!this.isOpen) this.list.showPopover();
    this.place();
    const items = this.items();
    items.at(index)?.focus();
  }

  close() {
    if (this.isOpen) this.list.hidePopover();
  }

  place() {
    const rect = this.button.getBoundingClientRect();
    const width = this.list.offsetWidth;
    const height = this.list.offsetHeight;
    const left = Math.max(8, Math.min(rect.right - width, window.innerWidth - width - 8));
    const below = rect.bottom + 4;
    const top = below + height > window.innerHeight - 8 ? Math.max(8, rect.top - height - 4) : below;
    this.list.style.left = `${left}px`;
    this.list.style.top = `${top}px`;
  }

  keys(event) {
    const items = this.items();
    const at = items.indexOf(document.activeElement);
    let next = null;
    if (event.key === "ArrowDown") next = (at + 1) % items.length;
    else if (event.key === "ArrowUp") next = (at - 1 + items.length) % items.length;
    else if (event.key === "Home") next = 0;
    else if (event.key === "End") next = items.length - 1;
    else if (event.key === "Tab") {
      // Back to the button first, so Tab goes on from there.
      this.button.focus();
      this.close();
      return;
    }
    if (next !== null) {
      event.preventDefault();
      items[next]?.focus();
    }
  }
}
