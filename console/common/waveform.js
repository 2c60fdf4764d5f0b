// The activity waveform: event density over a time window (24 h by default)
// on a <canvas>, with hover read-out and a scrubber. Shared by the public
// status page and the admin console; its refresh is a Poller of live.js.
//
// Usage
//
//   import { Waveform } from "/common/waveform.js";
//   const wave = new Waveform(container, {
//     url: "/api/v1/activity",         // or "/admin/api/activity" on the admin tier
//     onScrub: (moment) => { ... },    // the scrubber moved (see "moment" below)
//   });
//   wave.show();                       // load now, then refresh every minute
//   wave.hide();                       // stop refreshing (e.g. the page is hidden)
//
// Options (all optional except url)
//
//   url         the activity endpoint; ?window=&buckets= are appended
//   window      seconds of history (default 86400)
//   buckets     number of buckets (default 96: 15 minutes each over 24 h)
//   refreshMs   reload period while shown (default 60000)
//   load        async (url) -> JSON: how to GET (default: fetch, same origin,
//               JSON error message in the Error). The admin console passes
//               api.get so an ended session goes to the login page.
//   label       accessible name of the scrubber (default "Activity over the last 24 hours")
//   onScrub     (moment) => void, called when the scrubber points at another
//               bucket, or is released; moment = { index, time, start, end,
//               count, latest, final }: time is the Date the scrubber points
//               at, start/end the bucket's bounds (Dates), latest is true for
//               the newest bucket (whose end is "now": ask for events since
//               start without an upper bound), final is true when the drag
//               ended or the move came from a key or scrubTo.
//               onScrub(null): the scrubber was parked at "now" again.
//   onLoad      (data) => void after every successful load (the endpoint's JSON)
//   onError     (error) => void when a load fails (the last data stays drawn)
//
// Methods
//
//   show(), hide()     start / stop the minute refresh (also paused while the
//                      document is hidden, backing off after a failure); show()
//                      loads at once
//   refresh()          load now (a load already in flight is not repeated)
//   scrubTo(when)      point the scrubber at a Date (or ISO string); null parks
//                      it at "now" again. Calls onScrub (final: true, or null).
//   moment()           the moment the scrubber points at, or null when parked
//   destroy()          hide, disconnect observers, remove the element
//   el                 the component's root element (inside container)
//
// Size: the root fills the container's width and is 140 px high (waveform.css);
// set the height of .waveform in the page's stylesheet for another. The
// canvas follows the root's size (ResizeObserver) at the screen's pixel
// density, and repaints only when data, size, hover or scrubber change.
//
// Input: drag the scrubber with a mouse or a finger (pointer events;
// vertical swipes still scroll the page), hover for a bucket's time and
// count; the root is a focusable role="slider": Left/Right move one bucket,
// Shift+Left/Right one hour's worth, Home/End the oldest/newest, Escape parks
// the scrubber at "now".
//
// State for tests and pages, as data- attributes on the root: data-state
// (loading|ready|error), data-buckets, data-total, data-peak, data-draws (how
// many times the canvas was painted with data), data-scrub (the ISO time the
// scrubber points at, "" when parked), data-index (its bucket).
//
// Theme: CSS custom properties read on the root at paint time (waveform.css
// sets defaults from the page's --accent/--muted/--border when they exist):
// --wave-line, --wave-fill, --wave-grid, --wave-text, --wave-scrub,
// --wave-hover, --wave-font. The stylesheet waveform.css beside this file is
// linked into the document on first use.

import { Poller } from "./live.js";

const DEFAULTS = {
  window: 86400,
  buckets: 96,
  refreshMs: 60_000,
  label: "Activity over the last 24 hours",
};
const PAD = { top: 14, bottom: 22, left: 0, right: 0 };
const HOUR_STEPS = [1, 2, 3, 4, 6, 12, 24];
const MIN_TICK_PX = 64;

let stylesheetLinked = false;

function linkStylesheet() {
  if (stylesheetLinked) return;
  stylesheetLinked = true;
  const href = new URL("./waveform.css", import.meta.url).href;
  if ([...document.styleSheets].some((s) => s.href === href)) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = href;
  document.head.prepend(link); // first, so the page's own rules can override it
}

async function fetchJson(url) {
  let response;
  try {
    response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" });
  } catch {
    throw new Error("the controller cannot be reached");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new Error(data?.error?.message ?? `the controller answered ${response.status}`);
  return data;
}

const pad2 = (n) => String(n).padStart(2, "0");
const clock = (d) => `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;

function span(start, end) {
  const day = start.toDateString() === new Date().toDateString() ? "" : `${start.toLocaleDateString(undefined, { weekday: "short" })} `;
  return `${day}${clock(start)}–${clock(end)}`;
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** Control points of a monotone cubic through the points (Fritsch-Carlson): smooth, never overshooting below zero. */
function monotone(xs, ys) {
  const n = xs.length;
  const d = [];
  for (let i = 0; i < n - 1; i++) d.push((ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i]));
  const m = new Array(n).fill(0);
  if (n > 1) {
    m[0] = d[0];
    m[n - 1] = d[n - 2];
  }
  for (let i = 1; i < n - 1; i++) m[i] = d[i - 1] * d[i] <= 0 ? 0 : (d[i - 1] + d[i]) / 2;
  for (let i = 0; i < n - 1; i++) {
    if (d[i] === 0) {
      m[i] = 0;
      m[i + 1] = 0;
      continue;
    }
    const a = m[i] / d[i];
    const b = m[i + 1] / d[i];
    const s = a * a + b * b;
    if (s > 9) {
      const t = 3 / Math.sqrt(s);
      m[i] = t * a * d[i];
      m[i + 1] = t * b * d[i];
    }
  }
  return m;
}

export class Waveform {
  constructor(container, options) {
    if (!options?.url) throw new Error("Waveform needs options.url");
    this.options = { ...DEFAULTS, load: fetchJson, ...options };
    linkStylesheet();

    this.el = document.createElement("div");
    this.el.className = "waveform";
    this.el.tabIndex = 0;
    this.el.setAttribute("role", "slider");
    this.el.setAttribute("aria-label", this.options.label);
    this.el.setAttribute("aria-valuemin", "0");
    this.el.dataset.state = "loading";
    this.el.dataset.draws = "0";
    this.el.dataset.scrub = "";
    this.canvas = document.createElement("canvas");
    this.canvas.setAttribute("aria-hidden", "true");
    this.tip = document.createElement("div");
    this.tip.className = "waveform-tip";
    this.tip.hidden = true;
    this.note = document.createElement("div");
    this.note.className = "waveform-note";
    this.note.textContent = "Loading activity…";
    this.el.append(this.canvas, this.tip, this.note);
    container.append(this.el);

    this.data = null; // { start: ms, bucketMs, counts[], total, peak }
    this.scrubMs = null; // the time the scrubber points at; null: parked at "now"
    this.hoverX = null;
    this.dragging = false;
    this.shown = false;
    this.frame = null;
    this.inflight = null;
    // A failed load keeps the last data drawn and tries again later, backing off.
    this.poller = new Poller(() => this.refresh(true), { every: this.options.refreshMs });
    this.width = 0;
    this.height = 0;

    this._bind();
  }

  // -- lifecycle -----------------------------------------------------------

  show() {
    if (this.shown) return;
    this.shown = true;
    this.poller.start();
  }

  hide() {
    this.shown = false;
    this.poller.stop();
    if (this.frame !== null) window.cancelAnimationFrame(this.frame);
    this.frame = null;
  }

  destroy() {
    this.hide();
    this.resizer.disconnect();
    this.dprQuery?.removeEventListener("change", this.onDpr);
    this.el.remove();
  }

  /** Load now (a load already in flight is not repeated); `rethrow`: a failure rejects (the poller backs off). */
  refresh(rethrow = false) {
    if (!this.inflight) {
      const { url, window: span_, buckets } = this.options;
      const sep = url.includes("?") ? "&" : "?";
      this.inflight = this.options
        .load(`${url}${sep}window=${span_}&buckets=${buckets}`)
        .then((data) => {
          this._accept(data);
          this.options.onLoad?.(data);
        })
        .catch((error) => {
          this.el.dataset.state = this.data ? "ready" : "error";
          this.el.dataset.error = error.message;
          if (!this.data) this._note(`Activity is unavailable: ${error.message}`);
          this.options.onError?.(error);
          throw error;
        })
        .finally(() => {
          this.inflight = null;
        });
    }
    return rethrow ? this.inflight : this.inflight.catch(() => {});
  }

  _accept(data) {
    const counts = data.buckets.map((b) => b.count);
    this.data = {
      start: Date.parse(data.start),
      bucketMs: data.bucket_s * 1000,
      counts,
      total: data.total,
      peak: Math.max(0, ...counts),
    };
    const el = this.el;
    el.dataset.state = "ready";
    delete el.dataset.error;
    el.dataset.buckets = String(counts.length);
    el.dataset.total = String(data.total);
    el.dataset.peak = String(this.data.peak);
    el.setAttribute("aria-valuemax", String(counts.length - 1));
    if (data.total === 0) this._note(`No events in the last ${this._windowText()}`);
    else this._note("");
    this._aria();
    this._paint();
  }

  _windowText() {
    const hours = this.options.window / 3600;
    return hours >= 1 && Number.isInteger(hours) ? plural(hours, "hour") : plural(Math.round(this.options.window / 60), "minute");
  }

  _note(text) {
    this.note.textContent = text;
    this.note.hidden = !text;
  }

  // -- geometry ------------------------------------------------------------

  _end() {
    return this.data.start + this.data.counts.length * this.data.bucketMs;
  }

  _xOf(ms) {
    const { start } = this.data;
    const w = this.width - PAD.left - PAD.right;
    return PAD.left + ((ms - start) / (this._end() - start)) * w;
  }

  _msOf(x) {
    const { start } = this.data;
    const w = this.width - PAD.left - PAD.right;
    const ratio = Math.min(1, Math.max(0, (x - PAD.left) / w));
    return start + ratio * (this._end() - start);
  }

  _indexOf(ms) {
    const { start, bucketMs, counts } = this.data;
    return Math.min(counts.length - 1, Math.max(0, Math.floor((ms - start) / bucketMs)));
  }

  _bucket(index, time) {
    const { start, bucketMs, counts } = this.data;
    const from = start + index * bucketMs;
    return {
      index,
      time: new Date(time),
      start: new Date(from),
      end: new Date(from + bucketMs),
      count: counts[index],
      latest: index === counts.length - 1,
    };
  }

  moment() {
    if (!this.data || this.scrubMs === null) return null;
    return this._bucket(this._indexOf(this.scrubMs), this.scrubMs);
  }

  // -- scrubbing -----------------------------------------------------------

  scrubTo(when) {
    if (when === null) {
      this._park();
      return;
    }
    const ms = when instanceof Date ? when.getTime() : Date.parse(when);
    if (!this.data || Number.isNaN(ms)) return;
    this._setScrub(Math.min(this._end(), Math.max(this.data.start, ms)), true, true);
  }

  _park() {
    const was = this.scrubMs;
    this.scrubMs = null;
    this.lastReported = null;
    this._aria();
    this._paint();
    if (was !== null) this.options.onScrub?.(null);
  }

  _setScrub(ms, final, force = false) {
    this.scrubMs = ms;
    const moment = this.moment();
    this._aria();
    this._paint();
    if (force || final || moment.index !== this.lastReported) {
      this.lastReported = moment.index;
      this.options.onScrub?.({ ...moment, final });
    }
  }

  _aria() {
    const el = this.el;
    const moment = this.moment();
    if (!this.data) return;
    const index = moment ? moment.index : this.data.counts.length - 1;
    const b = moment ?? this._bucket(index, this._end());
    el.setAttribute("aria-valuenow", String(index));
    el.setAttribute("aria-valuetext", `${moment ? "" : "Now, "}${span(b.start, b.end)}: ${plural(b.count, "event")}`);
    el.dataset.index = String(index);
    el.dataset.scrub = moment ? moment.time.toISOString() : "";
  }

  _bind() {
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => {
      if (!this.data || (e.pointerType === "mouse" && e.button !== 0)) return;
      e.preventDefault();
      this.el.focus({ preventScroll: true });
      c.setPointerCapture(e.pointerId);
      this.dragging = true;
      this.el.classList.add("dragging");
      // A finger may be starting a scroll (then pointercancel): it scrubs once it moves sideways or lifts.
      if (e.pointerType === "mouse") this._setScrub(this._msOf(this._localX(e)), false);
    });
    c.addEventListener("pointermove", (e) => {
      if (!this.data) return;
      const x = this._localX(e);
      if (this.dragging) {
        this._setScrub(this._msOf(x), false);
      }
      this.hoverX = e.pointerType === "mouse" || this.dragging ? x : null;
      this._tip();
      this._paint();
    });
    const release = (e) => {
      if (!this.dragging) return;
      this.dragging = false;
      this.el.classList.remove("dragging");
      if (c.hasPointerCapture(e.pointerId)) c.releasePointerCapture(e.pointerId);
      if (e.type === "pointerup") this._setScrub(this._msOf(this._localX(e)), true);
      if (e.pointerType !== "mouse") this.hoverX = null;
      this._tip();
      this._paint();
    };
    c.addEventListener("pointerup", release);
    c.addEventListener("pointercancel", release);
    c.addEventListener("pointerleave", () => {
      if (this.dragging) return;
      this.hoverX = null;
      this._tip();
      this._paint();
    });
    this.el.addEventListener("keydown", (e) => this._key(e));
    this.el.addEventListener("focus", () => this._paint());
    this.el.addEventListener("blur", () => this._paint());

    this.resizer = new ResizeObserver(() => this._resize());
    this.resizer.observe(this.el);
    this.onDpr = () => {
      this._watchDpr();
      this._resize();
    };
    this._watchDpr();
  }

  _watchDpr() {
    // A window dragged to a screen of another density: repaint sharp.
    this.dprQuery?.removeEventListener("change", this.onDpr);
    this.dprQuery = window.matchMedia(`(resolution: ${window.devicePixelRatio}dppx)`);
    this.dprQuery.addEventListener("change", this.onDpr, { once: true });
  }

  _localX(e) {
    return e.clientX - this.canvas.getBoundingClientRect().left;
  }

  _key(e) {
    if (!this.data) return;
    const last = this.data.counts.length - 1;
    const current = this.moment()?.index ?? last;
    const hour = Math.max(1, Math.round(3_600_000 / this.data.bucketMs));
    const step = e.shiftKey ? hour : 1;
    let index;
    switch (e.key) {
      case "ArrowLeft":
      case "ArrowDown":
        index = current - step;
        break;
      case "ArrowRight":
      case "ArrowUp":
        index = current + step;
        break;
      case "PageDown":
        index = current - hour;
        break;
      case "PageUp":
        index = current + hour;
        break;
      case "Home":
        index = 0;
        break;
      case "End":
        index = last;
        break;
      case "Escape":
        if (this.scrubMs === null) return;
        e.preventDefault();
        this._park();
        return;
      default:
        return;
    }
    e.preventDefault();
    index = Math.min(last, Math.max(0, index));
    const { start, bucketMs } = this.data;
    this._setScrub(start + (index + 0.5) * bucketMs, true, true);
  }

  _tip() {
    if (this.hoverX === null || !this.data) {
      this.tip.hidden = true;
      return;
    }
    const b = this._bucket(this._indexOf(this._msOf(this.hoverX)), this._msOf(this.hoverX));
    this.tip.textContent = `${span(b.start, b.end)} · ${plural(b.count, "event")}`;
    this.tip.hidden = false;
    const half = this.tip.offsetWidth / 2;
    const x = Math.min(this.width - half - 4, Math.max(half + 4, this.hoverX));
    this.tip.style.transform = `translate(${Math.round(x - half)}px, -100%)`;
  }

  // -- painting ------------------------------------------------------------

  _resize() {
    const rect = this.el.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    this.width = Math.max(1, Math.round(rect.width));
    this.height = Math.max(1, Math.round(rect.height));
    const w = Math.round(this.width * dpr);
    const h = Math.round(this.height * dpr);
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.dpr = dpr;
    this._draw(); // at once: a resized canvas is blank until painted
  }

  _paint() {
    // One paint per frame however many events asked for it; no loop.
    if (this.frame !== null) return;
    this.frame = window.requestAnimationFrame(() => {
      this.frame = null;
      this._draw();
    });
  }

  _colours() {
    const css = getComputedStyle(this.el);
    const v = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    return {
      line: v("--wave-line", "#8f7cf7"),
      fill: v("--wave-fill", "rgba(143, 124, 247, 0.35)"),
      grid: v("--wave-grid", "rgba(255, 255, 255, 0.08)"),
      text: v("--wave-text", "#8a93a6"),
      scrub: v("--wave-scrub", "#e6e9f0"),
      hover: v("--wave-hover", "rgba(255, 255, 255, 0.35)"),
      font: v("--wave-font", "11px system-ui, sans-serif"),
    };
  }

  _draw() {
    const ctx = this.canvas.getContext("2d");
    const dpr = this.dpr || window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, this.width, this.height);
    if (!this.data || this.width < 2) return;
    const col = this._colours();
    const { counts, bucketMs, start, peak } = this.data;
    const top = PAD.top;
    const base = this.height - PAD.bottom;
    const scale = (base - top) / Math.max(1, peak);

    // Hour ticks and labels along the bottom.
    ctx.font = col.font;
    ctx.textBaseline = "alphabetic";
    ctx.textAlign = "center";
    const end = this._end();
    const pxPerHour = (this.width / (end - start)) * 3_600_000;
    const step = HOUR_STEPS.find((h) => h * pxPerHour >= MIN_TICK_PX) ?? 24;
    const first = new Date(start);
    first.setMinutes(0, 0, 0);
    ctx.strokeStyle = col.grid;
    ctx.lineWidth = 1;
    ctx.fillStyle = col.text;
    for (let t = first.getTime() + 3_600_000; t < end; t += 3_600_000) {
      const d = new Date(t);
      if (d.getHours() % step !== 0) continue;
      const x = Math.round(this._xOf(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, base);
      ctx.stroke();
      if (x > 18 && x < this.width - 34) ctx.fillText(clock(d), x, this.height - 6);
    }
    ctx.textAlign = "right";
    ctx.fillText("now", this.width - 2, this.height - 6);
    ctx.beginPath();
    ctx.moveTo(0, base + 0.5);
    ctx.lineTo(this.width, base + 0.5);
    ctx.stroke();

    // The curve through the buckets' centres, flat out to both edges.
    const xs = counts.map((_, i) => this._xOf(start + (i + 0.5) * bucketMs));
    const ys = counts.map((c) => base - (c > 0 ? Math.max(2, c * scale) : 0));
    const m = monotone(xs, ys);
    const path = new Path2D();
    path.moveTo(0, ys[0]);
    path.lineTo(xs[0], ys[0]);
    for (let i = 0; i < xs.length - 1; i++) {
      const h = (xs[i + 1] - xs[i]) / 3;
      path.bezierCurveTo(xs[i] + h, ys[i] + m[i] * h, xs[i + 1] - h, ys[i + 1] - m[i + 1] * h, xs[i + 1], ys[i + 1]);
    }
    path.lineTo(this.width, ys[ys.length - 1]);
    const area = new Path2D(path);
    area.lineTo(this.width, base);
    area.lineTo(0, base);
    area.closePath();
    const gradient = ctx.createLinearGradient(0, top, 0, base);
    gradient.addColorStop(0, col.fill);
    gradient.addColorStop(1, "rgba(0, 0, 0, 0)");
    ctx.fillStyle = gradient;
    ctx.fill(area);
    ctx.strokeStyle = col.line;
    ctx.lineWidth = 1.75;
    ctx.lineJoin = "round";
    ctx.stroke(path);

    // The peak, so the height means something.
    if (peak > 0) {
      ctx.fillStyle = col.text;
      ctx.textAlign = "left";
      ctx.textBaseline = "top";
      ctx.fillText(`peak ${plural(peak, "event")} / ${Math.round(bucketMs / 60000)} min`, 2, 0);
    }

    // Hover: the bucket under the pointer.
    if (this.hoverX !== null && !this.dragging) {
      const i = this._indexOf(this._msOf(this.hoverX));
      const x0 = this._xOf(start + i * bucketMs);
      ctx.fillStyle = col.grid;
      ctx.fillRect(x0, top, Math.max(1, this._xOf(start + (i + 1) * bucketMs) - x0), base - top);
      ctx.fillStyle = col.hover;
      ctx.beginPath();
      ctx.arc(xs[i], ys[i], 3, 0, Math.PI * 2);
      ctx.fill();
    }

    // The scrubber: its bucket as a band, a line at its moment, a handle on top.
    const parked = this.scrubMs === null;
    const at = parked ? end : this.scrubMs;
    const i = this._indexOf(at);
    const sx = Math.min(this.width - 6, Math.max(6, this._xOf(at))); // the handle stays whole at the edges
    if (!parked) {
      const x0 = this._xOf(start + i * bucketMs);
      ctx.globalAlpha = 0.16;
      ctx.fillStyle = col.scrub;
      ctx.fillRect(x0, top, Math.max(1, this._xOf(start + (i + 1) * bucketMs) - x0), base - top);
      ctx.globalAlpha = 1;
    }
    ctx.strokeStyle = col.scrub;
    ctx.globalAlpha = parked ? 0.45 : 1;
    ctx.lineWidth = this.dragging ? 2 : 1.5;
    ctx.beginPath();
    ctx.moveTo(sx, top - 2);
    ctx.lineTo(sx, base);
    ctx.stroke();
    ctx.fillStyle = col.scrub;
    ctx.beginPath();
    ctx.arc(sx, top - 2, this.dragging ? 5.5 : 4.5, 0, Math.PI * 2);
    ctx.fill();
    ctx.globalAlpha = 1;
    if (document.activeElement === this.el) {
      ctx.strokeStyle = col.line;
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(sx, top - 2, 8, 0, Math.PI * 2);
      ctx.stroke();
    }

    this.el.dataset.draws = String(Number(this.el.dataset.draws) + 1);
  }
}
