// Where everything goes on the topology's stage: the controller in a column
// of its own, the network groups as regions on its left and right (LAN
// left, Tailscale right, others to the lighter side), each drone a card
// (small fleets) or a dot. Pure functions of the fleet and the stage's size.

import { NETWORK_ORDER, clamp } from "./model.js";

/** @typedef {import("../../fleet.js").Drone} Drone */

export const CARD_W = 172;
export const CARD_H = 64;
const MAX_CARDS = 40;
export const REGION_HEAD = 30;
const MARGIN = 16;

/**
 * @typedef {{network: string, drones: Drone[]}} Group
 * @typedef {Group & {side: string, x: number, y: number, w: number, h: number}} Region
 * @typedef {object} Node
 * @property {Drone} drone
 * @property {number} x centre
 * @property {number} y
 * @property {number} ax where the edge from the controller meets it
 * @property {number} ay
 * @property {Region} region
 * @typedef {object} Scene
 * @property {number} width
 * @property {number} height
 * @property {{x: number, y: number, r: number}} controller
 * @property {Region[]} regions
 * @property {Map<string, Node>} nodes by drone id
 * @property {boolean} cards cards (else dots)
 * @property {number} dotR a dot's radius
 * @property {number} cell a dot's cell
 */

/**
 * Groups of drones by network: LAN, Tailscale, then the others by name.
 * @param {Drone[]} drones
 * @returns {Group[]}
 */
export function groupsOf(drones) {
  /** @type {Map<string, Drone[]>} */
  const byNetwork = new Map();
  for (const d of drones) {
    const key = d.network || "";
    if (!byNetwork.has(key)) byNetwork.set(key, []);
    byNetwork.get(key)?.push(d);
  }
  /** @param {string} n */
  const rank = (n) => (NETWORK_ORDER.includes(n) ? NETWORK_ORDER.indexOf(n) : NETWORK_ORDER.length);
  return [...byNetwork.entries()]
    .sort(([a], [b]) => rank(a) - rank(b) || Number(a === "") - Number(b === "") || a.localeCompare(b))
    .map(([network, list]) => ({ network, drones: list.sort((a, b) => a.name.localeCompare(b.name)) }));
}

/**
 * The largest square cell such that n of them fit in w x h.
 * @param {number} n  @param {number} w  @param {number} h
 */
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
 * The scene for these drones on a stage of width x fullHeight, with
 * `reserve` px kept clear at the bottom (the legend's strip).
 * @param {Drone[]} drones
 * @param {number} width
 * @param {number} fullHeight
 * @param {number} reserve
 * @returns {Scene}
 */
export function layout(drones, width, fullHeight, reserve) {
  const height = Math.max(120, fullHeight - reserve);
  const groups = groupsOf(drones);
  /** @type {{left: Group[], right: Group[]}} */
  const sides = { left: [], right: [] };
  /** @param {Group[]} list */
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
  /** @type {Record<string, number>} */
  const sideX = { left: both ? 0 : ctlW, right: sideW + ctlW };
  const controller = { x: ctlX, y: height / 2, r: clamp(Math.min(ctlW, height) * 0.19, 26, 40) };

  /** @type {Region[]} */
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
  /** @param {Region} r */
  const inner = (r) => ({ w: r.w - 20, h: r.h - REGION_HEAD - 10 });
  const cards =
    drones.length <= MAX_CARDS &&
    regions.every((r) => {
      const { w, h } = inner(r);
      return Math.floor(w / (CARD_W + 14)) * Math.floor(h / (CARD_H + 12)) >= r.drones.length;
    });

  /** @type {Map<string, Node>} */
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

/**
 * The drone under a point of the stage, if any.
 * @param {Scene | null} scene
 * @param {number} x
 * @param {number} y
 * @returns {string | null}
 */
export function nodeAt(scene, x, y) {
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
