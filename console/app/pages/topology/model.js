// What the topology shows, shared by its modules: the packet kinds (legend
// and look), the drone states, the networks, and small helpers.

/**
 * @typedef {object} Kind
 * @property {string} label
 * @property {string} detail
 * @property {string} color
 * @property {number} r the packet's radius
 * @property {boolean} [burst] rings the drone when it arrives
 */

/** Packet kinds: what the legend says and how each looks. @type {Record<string, Kind>} */
export const KINDS = {
  heartbeat: { label: "Heartbeat", detail: "drone → controller", color: "#3ecf8e", r: 2.6 },
  ping: { label: "Ping", detail: "controller → drone", color: "#5aa9ff", r: 3 },
  pong: { label: "Pong", detail: "drone → controller", color: "#a8d1ff", r: 3 },
  start_build: { label: "Work assignment", detail: "start_build", color: "#a594ff", r: 4.2, burst: true },
  build_event: { label: "Build progress", detail: "build_event", color: "#f0b13c", r: 3.4 },
  job_done: { label: "Completion", detail: "job done", color: "#ff7ad9", r: 4.6, burst: true },
  job_failed: { label: "Failure", detail: "job failed on a drone", color: "#ff6b6b", r: 4.6, burst: true },
  control: { label: "Control", detail: "hello, welcome, channels, restarts", color: "#c3c9d6", r: 3 },
};
/** Protocol messages drawn as a kind of their own; the others are "control". */
export const PROTOCOL_KINDS = new Set(["heartbeat", "ping", "pong", "start_build", "build_event"]);
/** Events drawn as packets: event type -> kind. @type {Record<string, string>} */
export const EVENT_KINDS = { job_done: "job_done", job_failed_on_drone: "job_failed" };

/** @type {Record<string, {label: string, color: string}>} */
export const STATES = {
  online: { label: "Online", color: "#3ecf8e" },
  suspect: { label: "Suspect", color: "#f0b13c" },
  unhealthy: { label: "Unhealthy", color: "#ff6b6b" },
  grounded: { label: "Grounded", color: "#ff9f5a" },
  draining: { label: "Draining", color: "#5aa9ff" },
  offline: { label: "Offline", color: "#5d667a" },
};
export const NETWORK_ORDER = ["lan", "tailscale"];
/** @type {Record<string, string>} */
const NETWORK_NAMES = { lan: "LAN", tailscale: "Tailscale", "": "Unknown network" };

/**
 * online, suspect, unhealthy, offline from the fleet; grounded and draining from dispatch.
 * @param {import("../../fleet.js").Drone} drone
 */
export function stateOf(drone) {
  if (drone.status !== "online") return drone.status in STATES ? drone.status : "offline";
  if (drone.dispatch?.grounded) return "grounded";
  if (drone.dispatch?.draining) return "draining";
  return "online";
}

/** @param {string} network */
export const networkName = (network) => NETWORK_NAMES[network] ?? network;
/** @param {number} n  @param {string} word */
export const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
/** @param {number} v  @param {number} lo  @param {number} hi */
export const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

/** @param {number} n */
export function ordinal(n) {
  const teen = n % 100 >= 11 && n % 100 <= 13;
  return `${n}${teen ? "th" : ["th", "st", "nd", "rd"][n % 10] ?? "th"}`;
}

/**
 * An element, as ui.js's el(), and `swatch`: a legend colour (--swatch).
 * @param {string} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Node | string)} children
 * @returns {HTMLElement}
 */
export function el(tag, attrs = {}, ...children) {
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

/** Whether the user asked for less motion (followed live). */
const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");
export const motion = { reduced: reducedMotion.matches };
reducedMotion.addEventListener("change", () => {
  motion.reduced = reducedMotion.matches;
});
