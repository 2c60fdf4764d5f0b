// The packets on their way and the rings at the nodes: what the effects
// layer draws. A big fleet stays smooth: a packet of the same kind to the
// same drone already on its way absorbs a new one, routine kinds have a
// budget a second (token buckets), and at most MAX_IN_FLIGHT packets fly at
// once (routine ones beyond that are skipped and counted; other kinds push
// out the oldest routine one).

import { KINDS, clamp, motion } from "./model.js";

/** @typedef {import("./layout.js").Scene} Scene */

const MAX_IN_FLIGHT = 200;
const MAX_PULSES = 60;
// Routine packets drawn a second at most, per kind of routine: heartbeats
// (already sampled near the page's budget by the controller) and
// proof-of-life pings and pongs (a big fleet's are hundreds a second). Beyond
// it they are skipped and counted; work, builds, completions and control
// always fly.
/** @type {Record<string, number>} */
const ROUTINE_RATES = { heartbeat: 50, ping: 15, pong: 15 };
const ROUTINE = new Set(Object.keys(ROUTINE_RATES));
const BIG_FLEET = 60; // drones: from here on, no ring for every ping that arrives

/**
 * @typedef {object} Packet
 * @property {string} droneId
 * @property {string} kind
 * @property {boolean} inbound drone -> controller
 * @property {number} born performance.now()
 * @property {number} duration ms
 * @property {number} count packets it stands for
 * @property {number} x0
 * @property {number} y0
 * @property {number} x1
 * @property {number} y1
 *
 * @typedef {{droneId: string, colour: string, born: number, duration: number}} Pulse
 */

export class Traffic {
  constructor() {
    /** @type {Packet[]} */
    this.flight = [];
    /** @type {Pulse[]} */
    this.pulses = [];
    this.glow = 0; // the controller's, from what reaches it
    this.counts = { drawn: 0, merged: 0, skipped: 0, dropped: 0 };
    this.buckets = Object.fromEntries(
      Object.entries(ROUTINE_RATES).map(([kind, rate]) => [kind, { rate, tokens: rate, at: 0 }]),
    );
  }

  /**
   * A packet for a drone on the scene; false if it was skipped (nothing to record).
   * @param {Scene} scene
   * @param {string} droneId
   * @param {string} kind
   * @param {boolean} inbound
   * @param {number} now
   */
  launch(scene, droneId, kind, inbound, now) {
    const same = this.flight.find(
      (p) => p.droneId === droneId && p.kind === kind && p.inbound === inbound && now - p.born < p.duration / 2,
    );
    if (same) {
      same.count += 1;
      this.counts.merged += 1;
      return true;
    }
    if (ROUTINE.has(kind) && !this.takeToken(kind, now)) {
      this.counts.skipped += 1;
      return false;
    }
    if (this.flight.length >= MAX_IN_FLIGHT) {
      const oldest = ROUTINE.has(kind) ? -1 : this.flight.findIndex((p) => ROUTINE.has(p.kind));
      if (oldest < 0) {
        this.counts.skipped += 1;
        return false;
      }
      this.flight.splice(oldest, 1);
    }
    /** @type {Packet} */
    const packet = { droneId, kind, inbound, born: now, duration: 0, count: 1, x0: 0, y0: 0, x1: 0, y1: 0 };
    place(scene, packet);
    this.flight.push(packet);
    this.counts.drawn += 1;
    return true;
  }

  /**
   * A ring at a drone's node.
   * @param {string} droneId  @param {string} colour  @param {number} now  @param {number} [strength]
   */
  pulse(droneId, colour, now, strength = 1) {
    if (this.pulses.length >= MAX_PULSES) this.pulses.shift();
    this.pulses.push({ droneId, colour, born: now, duration: 900 * strength });
  }

  /**
   * One frame: packets that arrived make the controller glow or ring their
   * drone. True while something still moves.
   * @param {Scene | null} scene
   * @param {number} now
   */
  step(scene, now) {
    /** @type {Packet[]} */
    const arrived = [];
    this.flight = this.flight.filter((p) => {
      if (now - p.born < p.duration) return true;
      arrived.push(p);
      return false;
    });
    const big = scene !== null && scene.nodes.size >= BIG_FLEET;
    for (const p of arrived) {
      // What reaches the controller makes it glow; what reaches a drone rings it.
      if (p.inbound) this.glow = Math.min(1, this.glow + (p.kind === "heartbeat" ? 0.04 : 0.12));
      else if (KINDS[p.kind].burst || (p.kind === "ping" && !big)) this.pulse(p.droneId, KINDS[p.kind].color, now);
    }
    this.pulses = this.pulses.filter((p) => now - p.born < p.duration);
    this.glow *= 0.94;
    if (this.glow < 0.01) this.glow = 0;
    return this.flight.length > 0 || this.pulses.length > 0 || this.glow > 0;
  }

  /** The scene changed: packets follow their drone; those of a drone that left go. @param {Scene} scene */
  follow(scene) {
    this.flight = this.flight.filter((p) => scene.nodes.has(p.droneId));
    for (const p of this.flight) place(scene, p);
  }

  /** Nothing flies (the page is hidden). */
  clear() {
    this.flight = [];
    this.pulses = [];
    this.glow = 0;
  }

  /** @private @param {string} kind  @param {number} now */
  takeToken(kind, now) {
    const b = this.buckets[kind];
    b.tokens = Math.min(b.rate, b.tokens + ((now - b.at) / 1000) * b.rate);
    b.at = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}

/**
 * A packet's path: from the controller's rim to the drone's end of the edge, or back.
 * @param {Scene} scene  @param {Packet} p
 */
function place(scene, p) {
  const node = scene.nodes.get(p.droneId);
  if (!node) return;
  const ctl = scene.controller;
  const dx = node.ax - ctl.x;
  const dy = node.ay - ctl.y;
  const len = Math.hypot(dx, dy) || 1;
  const rim = [ctl.x + (dx / len) * ctl.r, ctl.y + (dy / len) * ctl.r];
  const end = [node.ax, node.ay];
  [[p.x0, p.y0], [p.x1, p.y1]] = p.inbound ? [end, rim] : [rim, end];
  p.duration = motion.reduced ? 700 : clamp(len * 2.2, 550, 1400);
}
