// Live data for every page of both tiers: a websocket that reconnects, and a
// poller. One place decides how a page stays live:
//
// - A lost connection is retried after an exponential backoff with full
//   jitter (a random wait between 0 and min(cap, base * 2^attempt)), so a
//   controller that restarts is not met by every browser at the same moment.
// - A websocket message {"dropped": N, ...} is the controller's note that N
//   items did not reach this slow reader (controller/web/streams.py): it goes
//   to the page's onGap, never to onMessage, and the page shows the gap.
// - While the document is hidden (another browser tab, a minimised window)
//   the socket is closed and the poller stops; both come back at once when
//   it is visible again. A page that must keep its connection (a shell)
//   says so with whileHidden: "keep".
// - stop() ends it for good: no timer, listener or socket is left behind.
//
// Public-safe (no admin API here): the public status page imports it too.

/** Backoff of a reconnect, in ms: the first attempt waits up to base, then twice as long, up to cap. */
export const RETRY = { base: 1000, cap: 30_000 };

/**
 * A random wait in [0, min(cap, base * 2^attempt)]: exponential backoff with full jitter.
 * @param {number} attempt 0 for the first retry
 * @param {{base: number, cap: number}} [limits]
 * @param {() => number} [random] in [0, 1)
 */
export function backoff(attempt, limits = RETRY, random = Math.random) {
  const ceiling = Math.min(limits.cap, limits.base * 2 ** Math.min(attempt, 30));
  return Math.round(random() * ceiling);
}

/** @returns {boolean} */
function documentHidden() {
  return typeof document !== "undefined" && document.visibilityState === "hidden";
}

/**
 * @typedef {{dropped: number, after_id?: number, after_seq?: number}} Gap
 *   The controller's note that `dropped` items after `after_id` (/ws/events)
 *   or `after_seq` (/ws/protocol) were left out for a slow reader.
 *
 * @typedef {"connecting" | "live" | "retrying" | "hidden" | "ended" | "stopped"} SocketState
 *   connecting: a socket is opening; live: it is open; retrying: lost, the
 *   next try is in `delay` ms; hidden: closed while the document is hidden;
 *   ended: lost and not retried (reconnect: false); stopped: stop() was called.
 *
 * @typedef {object} SocketStatus
 * @property {SocketState} state
 * @property {number} [delay] ms until the next try (retrying)
 * @property {boolean} [opened] whether the lost socket had opened (retrying, ended)
 * @property {CloseEvent} [close] the close of the lost socket (retrying, ended)
 *
 * @typedef {object} LiveSocketOptions
 * @property {() => string} url the websocket URL, asked again on every connect (resume points, filters)
 * @property {(item: any) => void} [onMessage] each JSON text message that is not a gap
 * @property {(gap: Gap) => void} [onGap] a {"dropped": N} message
 * @property {(data: ArrayBuffer) => void} [onBinary] each binary message (binaryType "arraybuffer")
 * @property {(status: SocketStatus) => void} [onState] every change of state
 * @property {() => void} [onConnect] just before each socket is made (a page that starts afresh clears here)
 * @property {boolean} [reconnect] retry a lost socket (default true); false: "ended" and the page offers a retry
 * @property {"close" | "keep"} [whileHidden] close the socket while the document is hidden (default "close")
 * @property {{base: number, cap: number}} [retry] backoff limits (default RETRY)
 */

/** A websocket of JSON messages that reconnects, reports gaps and rests while the page is hidden. */
export class LiveSocket {
  /** @param {LiveSocketOptions} options */
  constructor(options) {
    this.options = options;
    /** @type {WebSocket | null} */
    this.ws = null;
    /** @type {SocketState} */
    this.state = "stopped";
    this.attempt = 0;
    /** @type {number | null} */
    this.timer = null;
    this.running = false;
    this.onVisibility = () => this.visibilityChanged();
  }

  /** Connect (or keep the connection if one is open or on its way). */
  start() {
    if (this.running) return;
    this.running = true;
    this.attempt = 0;
    if (this.options.whileHidden !== "keep") document.addEventListener("visibilitychange", this.onVisibility);
    if (this.options.whileHidden !== "keep" && documentHidden()) this.setState({ state: "hidden" });
    else this.connect();
  }

  /** Close for good (code 1000): no retry, no listener left. */
  stop(code = 1000) {
    this.running = false;
    document.removeEventListener("visibilitychange", this.onVisibility);
    this.clearTimer();
    this.drop(code);
    this.setState({ state: "stopped" });
  }

  /** Close and connect again at once (a new URL: another filter, a resume point). */
  restart() {
    if (!this.running) return;
    this.clearTimer();
    this.drop(1000);
    this.attempt = 0;
    if (this.options.whileHidden !== "keep" && documentHidden()) this.setState({ state: "hidden" });
    else this.connect();
  }

  /** Whether a socket is open now. */
  get live() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /**
   * Send a text (objects as JSON) or bytes, if the socket is open; false if not.
   * @param {string | object | ArrayBufferView | ArrayBuffer} data
   */
  send(data) {
    if (!this.live || !this.ws) return false;
    if (typeof data === "string" || ArrayBuffer.isView(data) || data instanceof ArrayBuffer) {
      this.ws.send(/** @type {string | BufferSource} */ (data));
    } else {
      this.ws.send(JSON.stringify(data));
    }
    return true;
  }

  /** @private */
  connect() {
    this.timer = null;
    this.options.onConnect?.();
    const ws = new WebSocket(this.options.url());
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let opened = false;
    this.setState({ state: "connecting" });
    ws.addEventListener("open", () => {
      if (this.ws !== ws) return;
      opened = true;
      this.attempt = 0;
      this.setState({ state: "live" });
    });
    ws.addEventListener("message", (message) => {
      if (this.ws !== ws) return;
      if (typeof message.data !== "string") {
        this.options.onBinary?.(message.data);
        return;
      }
      let item;
      try {
        item = JSON.parse(message.data);
      } catch {
        return; // not ours to show
      }
      if (item !== null && typeof item === "object" && "dropped" in item) this.options.onGap?.(item);
      else this.options.onMessage?.(item);
    });
    ws.addEventListener("close", (close) => {
      if (this.ws !== ws) return; // closed by us: stop(), restart() or hidden
      this.ws = null;
      if (!this.running) return;
      if (this.options.reconnect === false) {
        this.running = false;
        document.removeEventListener("visibilitychange", this.onVisibility);
        this.setState({ state: "ended", opened, close });
        return;
      }
      const delay = backoff(this.attempt, this.options.retry);
      this.attempt += 1;
      this.timer = window.setTimeout(() => this.connect(), delay);
      this.setState({ state: "retrying", delay, opened, close });
    });
  }

  /** @private */
  visibilityChanged() {
    if (!this.running) return;
    if (documentHidden()) {
      this.clearTimer();
      this.drop(1000);
      this.setState({ state: "hidden" });
    } else if (this.ws === null && this.timer === null) {
      this.attempt = 0;
      this.connect();
    }
  }

  /** @private @param {number} code */
  drop(code) {
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(code);
  }

  /** @private */
  clearTimer() {
    if (this.timer !== null) window.clearTimeout(this.timer);
    this.timer = null;
  }

  /** @private @param {SocketStatus} status */
  setState(status) {
    this.state = status.state;
    this.options.onState?.(status);
  }
}

/**
 * Calls `fn` soon after `call()`, at most once every `every` ms: calls in
 * between make one (a burst of events asks for one reload). The first call
 * after a quiet spell waits `least` ms (0: at once).
 */
export class Throttle {
  /**
   * @param {() => void} fn
   * @param {number} every
   * @param {number} [least]
   */
  constructor(fn, every, least = 0) {
    this.fn = fn;
    this.every = every;
    this.least = least;
    /** @type {number | null} */
    this.timer = null;
    this.calledAt = 0;
  }

  call() {
    if (this.timer !== null) return;
    const wait = Math.max(this.least, this.calledAt + this.every - Date.now());
    this.timer = window.setTimeout(() => {
      this.timer = null;
      this.calledAt = Date.now();
      this.fn();
    }, wait);
  }

  /** What is pending is not called. */
  cancel() {
    if (this.timer !== null) window.clearTimeout(this.timer);
    this.timer = null;
  }
}

/**
 * @typedef {object} PollerOptions
 * @property {number} every ms from the end of one run to the start of the next
 * @property {(error: unknown, delay: number) => void} [onError] a run failed; the next is in delay ms
 * @property {{base: number, cap: number}} [retry] backoff after failures (default: base = every, cap 60 s)
 */

/**
 * Runs a task now and then every `every` ms after it ends, while started
 * and the document is visible. After a failure the next run waits `every`
 * plus a backoff with full jitter, growing with each failure in a row.
 * Only one run at a time; a run that ends after stop() schedules nothing.
 */
export class Poller {
  /**
   * @param {() => Promise<unknown>} task
   * @param {PollerOptions} options
   */
  constructor(task, options) {
    this.task = task;
    this.options = options;
    this.running = false;
    this.busy = false;
    this.again = false; // now() was asked while a run was busy
    this.failures = 0;
    /** @type {number | null} */
    this.timer = null;
    this.round = 0; // a run from before a stop() and start() does not schedule
    this.onVisibility = () => {
      if (!this.running) return;
      if (documentHidden()) this.clearTimer();
      else if (this.timer === null && !this.busy) this.run();
    };
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.round += 1;
    document.addEventListener("visibilitychange", this.onVisibility);
    if (!documentHidden()) this.run();
  }

  stop() {
    this.running = false;
    this.round += 1;
    document.removeEventListener("visibilitychange", this.onVisibility);
    this.clearTimer();
  }

  /** Run now (after an action, a change of filter) and go on from there. */
  now() {
    if (!this.running) return;
    if (this.busy) {
      this.again = true;
      return;
    }
    this.clearTimer();
    this.run();
  }

  /** @private */
  async run() {
    this.timer = null;
    const round = this.round;
    this.busy = true;
    this.again = false;
    let delay = this.options.every;
    try {
      await this.task();
      this.failures = 0;
    } catch (error) {
      const retry = this.options.retry ?? { base: this.options.every, cap: 60_000 };
      delay += backoff(this.failures, retry);
      this.failures += 1;
      if (round === this.round) this.options.onError?.(error, delay);
    } finally {
      this.busy = false;
    }
    if (round !== this.round || !this.running || documentHidden()) return;
    if (this.again) delay = 0;
    this.timer = window.setTimeout(() => this.run(), delay);
  }

  /** @private */
  clearTimer() {
    if (this.timer !== null) window.clearTimeout(this.timer);
    this.timer = null;
  }
}
