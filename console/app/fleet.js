// The fleet as the console knows it: one poll of GET /admin/api/drones for
// every page that shows drones (topology, drones), running while at least
// one of them is subscribed, and the drones as one typed shape.
//
// droneOf() is the only place that reads the controller's drone JSON: a
// field renamed on the controller is a change of one line here. Pages that
// only want the list once (a drone <select>) call fleet.fetch(), which
// refreshes the subscribers too.

import { get } from "./api.js";
import { Poller, Throttle } from "/common/live.js";

export const POLL_MS = 2000;
const SOON_MS = 150; // a poke waits this long, so that a burst of them is one request
const POKE_EVERY_MS = 1000; // and pokes ask at most this often

/**
 * @typedef {object} Dispatch
 * @property {boolean} draining
 * @property {string | null} drained_by
 * @property {boolean} grounded
 * @property {string | null} grounded_by
 * @property {string | null} grounded_until
 * @property {number} failures
 * @property {number} running_jobs
 * @property {string | null} [held_for_payload] why it takes no new build meanwhile: a payload it is to take
 *
 * @typedef {object} Drone
 * @property {string} id
 * @property {string} name
 * @property {string} status online, suspect, unhealthy or offline
 * @property {boolean} connected
 * @property {string} drone_type
 * @property {string} drone_type_reason
 * @property {number} cores
 * @property {string} network
 * @property {string} hostname
 * @property {string} agent_version
 * @property {string} payload_version
 * @property {number} heartbeat_interval_ms
 * @property {string | null} last_seen_at
 * @property {string | null} last_heartbeat_at
 * @property {string | null} last_pong_at
 * @property {number | null} ping_latency_ms
 * @property {number} load1 load average over 1 minute
 * @property {number} load5 load average over 5 minutes
 * @property {number} load15 load average over 15 minutes
 * @property {number} cpu_percent
 * @property {number} memory_percent
 * @property {number} disk_percent
 * @property {number | null} disk_free_bytes
 * @property {boolean} emerge_running
 * @property {string | null} current_job_id
 * @property {string | null} ssh_access how the controller reaches it out of band ("local", "ssh", or none)
 * @property {Dispatch | null} dispatch null when builds are off on this controller
 */

/**
 * One drone of the controller's answer, in the console's shape. (The
 * percentages are read under their proto names too, for a controller
 * that serves those.)
 * @param {any} d an item of GET /admin/api/drones
 * @returns {Drone}
 */
export function droneOf(d) {
  return {
    id: d.id,
    name: d.name,
    status: d.status,
    connected: Boolean(d.connected),
    drone_type: d.drone_type ?? "",
    drone_type_reason: d.drone_type_reason ?? "",
    cores: d.cores ?? 0,
    network: d.network ?? "",
    hostname: d.hostname ?? "",
    agent_version: d.agent_version ?? "",
    payload_version: d.payload_version ?? "",
    heartbeat_interval_ms: d.heartbeat_interval_ms ?? 1000,
    last_seen_at: d.last_seen_at ?? null,
    last_heartbeat_at: d.last_heartbeat_at ?? null,
    last_pong_at: d.last_pong_at ?? null,
    ping_latency_ms: d.ping_latency_ms ?? null,
    load1: d.load1 ?? 0,
    load5: d.load5 ?? 0,
    load15: d.load15 ?? 0,
    cpu_percent: d.cpu_percent ?? 0,
    memory_percent: d.memory_percent ?? 0,
    disk_percent: d.disk_percent ?? 0,
    disk_free_bytes: d.disk_free_bytes ?? null,
    emerge_running: Boolean(d.emerge_running),
    current_job_id: d.current_job_id || null,
    ssh_access: d.ssh_access || null,
    dispatch: d.dispatch ?? null,
  };
}

/**
 * @typedef {object} FleetUpdate
 * @property {Drone[]} drones the newest list (kept through an error)
 * @property {Error | null} error why the last poll failed, or null
 * @property {number} at when the list was loaded (Date.now())
 *
 * @typedef {(update: FleetUpdate) => void} FleetListener
 */

class FleetStore {
  constructor() {
    /** @type {Drone[]} */
    this.drones = [];
    /** @type {Map<string, Drone>} */
    this.byId = new Map();
    this.at = 0;
    /** @type {Error | null} */
    this.error = null;
    /** @type {Set<FleetListener>} */
    this.listeners = new Set();
    /** @type {Promise<Drone[]> | null} */
    this.loading = null;
    this.poller = new Poller(() => this.fetch(), {
      every: POLL_MS,
      onError: (error) => {
        this.error = error instanceof Error ? error : new Error(String(error));
        this.notify();
      },
    });
    this.pokes = new Throttle(() => this.poller.now(), POKE_EVERY_MS, SOON_MS);
  }

  /**
   * Follow the fleet: the listener has the newest list at once (if there is
   * one) and after every poll. Polls run while anyone follows.
   * @param {FleetListener} listener
   * @returns {() => void} unsubscribe
   */
  subscribe(listener) {
    this.listeners.add(listener);
    // A list from a moment ago shows at once; the poll that starts now follows.
    if (this.at && Date.now() - this.at < 2 * POLL_MS) listener(this.update());
    this.poller.start();
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) {
        this.poller.stop();
        this.pokes.cancel();
      }
    };
  }

  /**
   * The list now (one request however many ask at once); subscribers hear of it.
   * @returns {Promise<Drone[]>}
   */
  fetch() {
    this.loading ??= get("/admin/api/drones")
      .then((reply) => {
        this.accept(reply.drones.map(droneOf));
        return this.drones;
      })
      .finally(() => {
        this.loading = null;
      });
    return this.loading;
  }

  /** Something changed (a drone we do not know, a state): poll soon, at most once a second. */
  poke() {
    if (this.listeners.size > 0) this.pokes.call();
  }

  /** @param {string} name */
  byName(name) {
    return this.drones.find((d) => d.name === name);
  }

  /** @private @param {Drone[]} drones */
  accept(drones) {
    this.drones = drones;
    this.byId = new Map(drones.map((d) => [d.id, d]));
    this.at = Date.now();
    this.error = null;
    this.notify();
  }

  /** @private @returns {FleetUpdate} */
  update() {
    return { drones: this.drones, error: this.error, at: this.at };
  }

  /** @private */
  notify() {
    const update = this.update();
    for (const listener of [...this.listeners]) listener(update);
  }
}

/** The console's one fleet store. */
export const fleet = new FleetStore();
