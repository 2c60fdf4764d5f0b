// Painting the topology on two stacked canvases. The base layer (regions,
// edges, the controller, the drones) is painted when the fleet or the size
// changes; the effects layer (packets, pulses, hover and focus rings) on
// every animation frame while something moves.

import { CARD_H, CARD_W, REGION_HEAD } from "./layout.js";
import { KINDS, STATES, clamp, motion, networkName, plural, stateOf } from "./model.js";

/**
 * @typedef {import("./layout.js").Scene} Scene
 * @typedef {import("./layout.js").Node} Node
 * @typedef {import("./traffic.js").Traffic} Traffic
 * @typedef {import("../../fleet.js").Drone} Drone
 * @typedef {{text: string, muted: string, faint: string, surface: string, surface2: string,
 *   border: string, strong: string, accent: string, font: string}} Colours
 * @typedef {{selected: string | null, hover: string | null, focused: string | null}} Marks
 */

/** "#rrggbb" with an alpha, for canvas gradients. @param {string} hex  @param {number} alpha */
function rgba(hex, alpha) {
  const n = Number.parseInt(hex.slice(1), 16);
  return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

/** @param {number} t */
const easeInOut = (t) => (t < 0.5 ? 2 * t * t : 1 - (-2 * t + 2) ** 2 / 2);

/** @param {CanvasRenderingContext2D} g  @param {string} text  @param {number} width */
function truncate(g, text, width) {
  if (g.measureText(text).width <= width) return text;
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (g.measureText(`${text.slice(0, mid)}…`).width <= width) lo = mid;
    else hi = mid - 1;
  }
  return `${text.slice(0, lo)}…`;
}

/** @param {CanvasRenderingContext2D} g  @param {number} x  @param {number} y  @param {number} w  @param {number} h  @param {number} r */
function roundRect(g, x, y, w, h, r) {
  g.beginPath();
  g.roundRect(x, y, w, h, r);
}

/** @param {CanvasRenderingContext2D} g  @param {number} x  @param {number} y  @param {number} r  @param {string} colour */
function drawHexagon(g, x, y, r, colour) {
  g.beginPath();
  for (let i = 0; i < 6; i++) {
    const a = Math.PI / 6 + (i * Math.PI) / 3;
    if (i) g.lineTo(x + r * Math.cos(a), y + r * Math.sin(a));
    else g.moveTo(x + r * Math.cos(a), y + r * Math.sin(a));
  }
  g.closePath();
  g.lineWidth = 1.8;
  g.strokeStyle = colour;
  g.stroke();
  g.beginPath();
  g.arc(x, y, r * 0.32, 0, Math.PI * 2);
  g.fillStyle = colour;
  g.fill();
}

export class Painter {
  /**
   * @param {HTMLCanvasElement} base
   * @param {HTMLCanvasElement} fx
   * @param {HTMLElement} page where the theme's colours are read
   * @param {(drone: Drone) => string} jobText what a drone works on, as shown on its card
   */
  constructor(base, fx, page, jobText) {
    this.base = base;
    this.fx = fx;
    this.page = page;
    this.jobText = jobText;
    this.width = 0;
    this.height = 0;
    this.dpr = window.devicePixelRatio || 1;
    this.baseKey = "";
    /** @type {Colours | null} */
    this.colours = null;
    /** @type {Map<string, {canvas: HTMLCanvasElement, size: number}>} */
    this.sprites = new Map();
    /** drone id -> the state its node shows on the canvas @type {Map<string, string>} */
    this.drawnStates = new Map();
  }

  /** The canvases' size in CSS px and the screen's density; false if nothing changed. @param {number} w  @param {number} h  @param {number} ratio */
  resize(w, h, ratio) {
    if (w === this.width && h === this.height && ratio === this.dpr) return false;
    this.width = w;
    this.height = h;
    this.dpr = ratio;
    for (const canvas of [this.base, this.fx]) {
      canvas.width = Math.max(1, Math.round(w * ratio));
      canvas.height = Math.max(1, Math.round(h * ratio));
    }
    this.baseKey = "";
    return true;
  }

  /** The base layer must be painted again (a new layout). */
  invalidate() {
    this.baseKey = "";
  }

  /** @returns {Colours} */
  readColours() {
    const css = getComputedStyle(this.page);
    /** @param {string} name  @param {string} fallback */
    const v = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    return {
      text: v("--text", "#e6e9f0"),
      muted: v("--muted", "#8a93a6"),
      faint: v("--faint", "#5d667a"),
      surface: v("--surface", "#131823"),
      surface2: v("--surface-2", "#1a2030"),
      border: v("--border", "#242b3b"),
      strong: v("--border-strong", "#313a4f"),
      accent: v("--accent", "#8f7cf7"),
      font: getComputedStyle(document.body).fontFamily,
    };
  }

  /**
   * Regions, edges, the controller and the drones; only when what they show changed.
   * @param {Scene | null} scene
   * @param {Drone[]} drones
   * @param {string} key what the drones' nodes show (the page's), so an unchanged fleet paints nothing
   */
  paintBase(scene, drones, key) {
    if (!scene) return;
    const full = `${this.width}x${this.height}@${this.dpr}|${key}`;
    if (full === this.baseKey) return;
    this.baseKey = full;
    this.colours ??= this.readColours();
    const c = this.colours;
    const g = /** @type {CanvasRenderingContext2D} */ (this.base.getContext("2d"));
    g.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    g.clearRect(0, 0, this.width, this.height);
    const { controller: ctl } = scene;

    // Regions, with their network and counts.
    for (const r of scene.regions) {
      roundRect(g, r.x, r.y, r.w, r.h, 12);
      g.fillStyle = "rgba(255, 255, 255, 0.018)";
      g.fill();
      g.strokeStyle = c.border;
      g.lineWidth = 1;
      g.setLineDash([4, 4]);
      g.stroke();
      g.setLineDash([]);
      const online = r.drones.filter((d) => d.status === "online").length;
      g.font = `600 12px ${c.font}`;
      g.textBaseline = "middle";
      g.textAlign = "left";
      g.fillStyle = c.text;
      const title = networkName(r.network).toUpperCase();
      g.fillText(title, r.x + 12, r.y + REGION_HEAD / 2 + 1);
      const tw = g.measureText(title).width;
      g.font = `12px ${c.font}`;
      g.fillStyle = c.muted;
      g.fillText(`${plural(r.drones.length, "drone")} · ${online} online`, r.x + 20 + tw, r.y + REGION_HEAD / 2 + 1);
    }

    // Edges: faint for a big fleet, a line per drone for a small one.
    const many = scene.nodes.size > 60;
    g.lineWidth = many ? 0.6 : 1.2;
    for (const node of scene.nodes.values()) {
      const state = stateOf(node.drone);
      g.strokeStyle =
        state === "offline" ? "rgba(93, 102, 122, 0.25)" : many ? "rgba(143, 124, 247, 0.10)" : "rgba(143, 124, 247, 0.32)";
      if (state === "offline") g.setLineDash([3, 5]);
      g.beginPath();
      g.moveTo(ctl.x, ctl.y);
      g.lineTo(node.ax, node.ay);
      g.stroke();
      g.setLineDash([]);
    }

    // The controller.
    const halo = g.createRadialGradient(ctl.x, ctl.y, ctl.r * 0.6, ctl.x, ctl.y, ctl.r * 2.2);
    halo.addColorStop(0, "rgba(143, 124, 247, 0.28)");
    halo.addColorStop(1, "rgba(143, 124, 247, 0)");
    g.fillStyle = halo;
    g.beginPath();
    g.arc(ctl.x, ctl.y, ctl.r * 2.2, 0, Math.PI * 2);
    g.fill();
    g.beginPath();
    g.arc(ctl.x, ctl.y, ctl.r, 0, Math.PI * 2);
    g.fillStyle = c.surface2;
    g.fill();
    g.lineWidth = 2;
    g.strokeStyle = c.accent;
    g.stroke();
    drawHexagon(g, ctl.x, ctl.y, ctl.r * 0.42, c.accent);
    g.textAlign = "center";
    g.textBaseline = "top";
    g.font = `600 13px ${c.font}`;
    g.fillStyle = c.text;
    g.fillText("Controller", ctl.x, ctl.y + ctl.r + 10);
    const online = drones.filter((d) => d.status === "online");
    g.font = `12px ${c.font}`;
    g.fillStyle = c.muted;
    g.fillText(`${online.length} of ${drones.length} online`, ctl.x, ctl.y + ctl.r + 28);

    // The drones.
    this.drawnStates.clear();
    for (const node of scene.nodes.values()) {
      if (scene.cards) this.drawCard(g, node, c);
      else this.drawDot(g, scene, node, c);
      this.drawnStates.set(node.drone.id, stateOf(node.drone));
    }
  }

  /** @private @param {CanvasRenderingContext2D} g  @param {Node} node  @param {Colours} c */
  drawCard(g, node, c) {
    const d = node.drone;
    const state = stateOf(d);
    const colour = STATES[state].color;
    const x = node.x - CARD_W / 2;
    const y = node.y - CARD_H / 2;
    g.globalAlpha = state === "offline" ? 0.6 : 1;
    roundRect(g, x, y, CARD_W, CARD_H, 9);
    g.fillStyle = c.surface2;
    g.fill();
    g.lineWidth = 1;
    g.strokeStyle = c.strong;
    g.stroke();
    // The state as a stripe down the left edge.
    g.save();
    roundRect(g, x, y, CARD_W, CARD_H, 9);
    g.clip();
    g.fillStyle = colour;
    g.fillRect(x, y, 3, CARD_H);
    // Load against cores, as a bar along the bottom.
    const load = d.connected ? clamp(d.load1 / Math.max(1, d.cores), 0, 1) : 0;
    g.fillStyle = "rgba(255, 255, 255, 0.06)";
    g.fillRect(x, y + CARD_H - 3, CARD_W, 3);
    g.fillStyle = load > 0.9 ? "#f0b13c" : "rgba(143, 124, 247, 0.85)";
    g.fillRect(x, y + CARD_H - 3, CARD_W * load, 3);
    g.restore();

    g.textAlign = "left";
    g.textBaseline = "alphabetic";
    g.fillStyle = c.text;
    const stateText = STATES[state].label.toLowerCase();
    g.font = `600 11px ${c.font}`;
    const sw = g.measureText(stateText).width;
    g.font = `600 12.5px ${c.font}`;
    g.fillText(truncate(g, d.name, CARD_W - sw - 34), x + 12, y + 19);
    g.font = `600 11px ${c.font}`;
    g.fillStyle = colour;
    g.textAlign = "right";
    g.fillText(stateText, x + CARD_W - 10, y + 19);
    g.beginPath();
    g.arc(x + CARD_W - 16 - sw, y + 15, 3, 0, Math.PI * 2);
    g.fill();
    g.textAlign = "left";
    g.font = `12px ${c.font}`;
    g.fillStyle = c.muted;
    const loadText = d.connected ? `load ${d.load1.toFixed(2)}` : "load –";
    g.fillText(`${plural(d.cores, "core")} · ${loadText}`, x + 12, y + 37);
    const job = this.jobText(d);
    g.fillStyle = d.current_job_id ? "#c9bfff" : c.faint;
    g.fillText(truncate(g, job, CARD_W - 24), x + 12, y + 54);
    g.globalAlpha = 1;
  }

  /** @private @param {CanvasRenderingContext2D} g  @param {Scene} scene  @param {Node} node  @param {Colours} c */
  drawDot(g, scene, node, c) {
    const d = node.drone;
    const state = stateOf(d);
    const colour = STATES[state].color;
    const r = scene.dotR;
    g.beginPath();
    g.arc(node.x, node.y, r, 0, Math.PI * 2);
    g.fillStyle = state === "offline" ? c.surface2 : colour;
    g.globalAlpha = state === "offline" ? 1 : 0.9;
    g.fill();
    g.globalAlpha = 1;
    if (state === "offline") {
      g.lineWidth = 1;
      g.strokeStyle = colour;
      g.stroke();
    }
    // Building: a dark core; load: an arc around the node.
    if (d.current_job_id || d.emerge_running) {
      g.beginPath();
      g.arc(node.x, node.y, r * 0.42, 0, Math.PI * 2);
      g.fillStyle = c.surface;
      g.fill();
    }
    if (r >= 5 && d.connected) {
      const load = clamp(d.load1 / Math.max(1, d.cores), 0, 1);
      if (load > 0) {
        g.beginPath();
        g.arc(node.x, node.y, r + 2.5, -Math.PI / 2, -Math.PI / 2 + load * Math.PI * 2);
        g.lineWidth = 1.5;
        g.strokeStyle = load > 0.9 ? "#f0b13c" : "rgba(200, 190, 255, 0.8)";
        g.stroke();
      }
    }
    if (scene.cell >= 46) {
      g.font = `11px ${c.font}`;
      g.textAlign = "center";
      g.textBaseline = "top";
      g.fillStyle = c.muted;
      g.fillText(truncate(g, d.name, scene.cell - 6), node.x, node.y + r + 5);
    }
  }

  /** A packet's glow, drawn once per kind and size (and screen density) and then only copied. @private @param {string} kind */
  sprite(kind) {
    const key = `${kind}@${this.dpr}`;
    let found = this.sprites.get(key);
    if (found) return found;
    const k = KINDS[kind];
    const size = Math.ceil(k.r * 6);
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = Math.ceil(size * this.dpr);
    const g = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
    g.scale(this.dpr, this.dpr);
    const mid = size / 2;
    const glow = g.createRadialGradient(mid, mid, 0, mid, mid, mid);
    glow.addColorStop(0, k.color);
    glow.addColorStop(k.r / mid, k.color);
    glow.addColorStop(Math.min(0.99, (k.r + 1.2) / mid), rgba(k.color, 0.4));
    glow.addColorStop(1, "rgba(0, 0, 0, 0)");
    g.fillStyle = glow;
    g.fillRect(0, 0, size, size);
    found = { canvas, size };
    this.sprites.set(key, found);
    return found;
  }

  /**
   * The effects layer at time `now`: the controller's glow, pulses, packets and the marks.
   * @param {Scene | null} scene  @param {Traffic} traffic  @param {Marks} marks  @param {number} now
   */
  paintFx(scene, traffic, marks, now) {
    const g = /** @type {CanvasRenderingContext2D} */ (this.fx.getContext("2d"));
    g.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    g.clearRect(0, 0, this.width, this.height);
    if (!scene) return;
    const ctl = scene.controller;

    // The controller glows with what reaches it.
    if (traffic.glow > 0) {
      g.beginPath();
      g.arc(ctl.x, ctl.y, ctl.r + 3 + traffic.glow * 6, 0, Math.PI * 2);
      g.strokeStyle = `rgba(165, 148, 255, ${0.25 + traffic.glow * 0.5})`;
      g.lineWidth = 2 + traffic.glow * 2;
      g.stroke();
    }

    for (const p of traffic.pulses) {
      const node = scene.nodes.get(p.droneId);
      if (!node) continue;
      const t = (now - p.born) / p.duration;
      const r0 = scene.cards ? 0 : scene.dotR;
      g.globalAlpha = 1 - t;
      g.strokeStyle = p.colour;
      g.lineWidth = 2;
      if (scene.cards) {
        const grow = 2 + t * 10;
        roundRect(g, node.x - CARD_W / 2 - grow, node.y - CARD_H / 2 - grow, CARD_W + 2 * grow, CARD_H + 2 * grow, 10 + grow);
      } else {
        g.beginPath();
        g.arc(node.x, node.y, r0 + 2 + t * Math.max(10, r0 * 2), 0, Math.PI * 2);
      }
      g.stroke();
    }
    g.globalAlpha = 1;

    // Packets: a glow with a fainter one behind it as a trail.
    const trails = traffic.flight.length <= 120 && !motion.reduced;
    for (const p of traffic.flight) {
      const t = clamp((now - p.born) / p.duration, 0, 1);
      if (motion.reduced) {
        // No travel: the edge lights up and fades.
        g.globalAlpha = 1 - t;
        g.strokeStyle = KINDS[p.kind].color;
        g.lineWidth = 2;
        g.beginPath();
        g.moveTo(p.x0, p.y0);
        g.lineTo(p.x1, p.y1);
        g.stroke();
        continue;
      }
      const { canvas, size } = this.sprite(p.kind);
      const scale = p.count > 1 ? Math.min(1.8, 1 + Math.log2(p.count) * 0.25) : 1;
      const s = size * scale;
      if (trails && t > 0.06) {
        const e = easeInOut(t - 0.06);
        g.globalAlpha = 0.35;
        g.drawImage(canvas, p.x0 + (p.x1 - p.x0) * e - s * 0.35, p.y0 + (p.y1 - p.y0) * e - s * 0.35, s * 0.7, s * 0.7);
      }
      const e = easeInOut(t);
      g.globalAlpha = 1;
      g.drawImage(canvas, p.x0 + (p.x1 - p.x0) * e - s / 2, p.y0 + (p.y1 - p.y0) * e - s / 2, s, s);
    }
    g.globalAlpha = 1;

    // Hover, keyboard focus and the selected drone.
    for (const [id, style] of /** @type {[string | null, string][]} */ ([
      [marks.selected, "selected"],
      [marks.hover, "hover"],
      [marks.focused, "focus"],
    ])) {
      const node = id && scene.nodes.get(id);
      if (!node) continue;
      g.strokeStyle = style === "hover" ? "rgba(255, 255, 255, 0.55)" : "#a594ff";
      g.lineWidth = style === "focus" ? 2.5 : 2;
      if (style === "focus") g.setLineDash([4, 3]);
      if (scene.cards) {
        roundRect(g, node.x - CARD_W / 2 - 4, node.y - CARD_H / 2 - 4, CARD_W + 8, CARD_H + 8, 12);
      } else {
        g.beginPath();
        g.arc(node.x, node.y, scene.dotR + 5, 0, Math.PI * 2);
      }
      g.stroke();
      g.setLineDash([]);
    }
  }
}
