// The fleet as the dashboard holds it: every device's latest state, a short trail of where it
// has been, and where its marker is drawn right now. Frames are applied here and nothing else
// happens per message: drawing and the DOM read this model on their own schedule.

import { colorIndex } from "./colors.js";

export const TRAIL_SECONDS = 8;
export const STALE_SECONDS = 5;
const TRAIL_SPACING = 0.2; // seconds between kept trail points: enough for a smooth curve
const TRAIL_CAPACITY = Math.ceil(TRAIL_SECONDS / TRAIL_SPACING) + 2;
export const GLIDE_MS = 300; // longest glide of a marker to its reported position
// Shown as the age, not as fields.
const BOOKKEEPING = new Set(["deviceId", "timestamp", "receivedAt"]);

/** The last few seconds of positions, oldest first, in a fixed ring. */
/** `[minX, minY, maxX, maxY]` of a trail's points (`forEach(visit(t, x, y))`) since time
 * `since`, or null when there is none: live and replayed trails share it. */
export function trailBounds(trail, since) {
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -Infinity;
  let maxY = -Infinity;
  trail.forEach((t, x, y) => {
    if (t < since) return;
    minX = Math.min(minX, x);
    minY = Math.min(minY, y);
    maxX = Math.max(maxX, x);
    maxY = Math.max(maxY, y);
  });
  return minX === Infinity ? null : [minX, minY, maxX, maxY];
}

class Trail {
  constructor() {
    this.points = new Float64Array(TRAIL_CAPACITY * 3); // t, x, y
    this.start = 0;
    this.length = 0;
  }

  add(t, x, y) {
    if (this.length > 0 && t < this._time(this.length - 1)) return; // the trail only moves on
    const head = this.length - 1;
    if (head > 0 && this._time(head) - this._time(head - 1) < TRAIL_SPACING) {
      // The head follows the device until it is far enough from the point before it to stay.
      this._write(head, t, x, y);
      return;
    }
    if (this.length === TRAIL_CAPACITY) {
      this.start = (this.start + 1) % TRAIL_CAPACITY;
      this.length -= 1;
    }
    this._write(this.length, t, x, y);
    this.length += 1;
  }

  /** Calls `visit(t, x, y)` for each point, oldest first. */
  forEach(visit) {
    for (let i = 0; i < this.length; i += 1) {
      const at = this._offset(i);
      visit(this.points[at], this.points[at + 1], this.points[at + 2]);
    }
  }

  bounds(since) {
    return trailBounds(this, since);
  }

  /**
   * `[t0, x0, y0, t1, x1, y1]`: the newest point, and the oldest one at most `seconds` before
   * it (read backwards from the head, so it costs a few steps), or null when empty.
   */
  recent(seconds) {
    if (this.length === 0) return null;
    const head = this._offset(this.length - 1);
    const newest = this.points[head];
    let at = head;
    for (let i = this.length - 2; i >= 0; i -= 1) {
      const offset = this._offset(i);
      if (this.points[offset] < newest - seconds) break;
      at = offset;
    }
    const p = this.points;
    return [p[at], p[at + 1], p[at + 2], newest, p[head + 1], p[head + 2]];
  }

  _offset(i) {
    return ((this.start + i) % TRAIL_CAPACITY) * 3;
  }

  _time(i) {
    return this.points[this._offset(i)];
  }

  _write(i, t, x, y) {
    const at = this._offset(i);
    this.points[at] = t;
    this.points[at + 1] = x;
    this.points[at + 2] = y;
  }
}

export class Device {
  constructor(id) {
    this.id = id;
    this.color = colorIndex(id);
    this.state = { deviceId: id };
    this.trail = new Trail();
    this.rate = null; // messages per second, from the server's per-device counters
    this.hasPosition = false;
    // The marker glides from where it was drawn to the reported position over about one
    // update interval, so motion looks continuous between 5-10 Hz reports.
    this._from = [0, 0, null];
    this._to = [0, 0, null];
    this._glideStart = 0;
    this._glideMs = 0;
    this._updatedAt = 0;
  }

  apply(state, nowMs) {
    this.state = state;
    const { x, y } = state;
    if (typeof x !== "number" || typeof y !== "number") return;
    const heading = typeof state.heading === "number" ? state.heading : null;
    if (this.hasPosition) {
      this._from = this.position(nowMs);
      this._glideMs = Math.min(GLIDE_MS, nowMs - this._updatedAt);
    } else {
      this._from = [x, y, heading];
      this._glideMs = 0;
    }
    this._to = [x, y, heading];
    this._glideStart = nowMs;
    this._updatedAt = nowMs;
    this.hasPosition = true;
    this.trail.add(state.receivedAt ?? state.timestamp ?? Date.now() / 1000, x, y);
  }

  /** `[x, y, heading]` of the marker at time `nowMs` (performance.now()); heading may be null. */
  position(nowMs) {
    const [x1, y1, h1] = this._to;
    const k = this._glideMs > 0 ? Math.min(1, (nowMs - this._glideStart) / this._glideMs) : 1;
    if (k >= 1) return this._to;
    const [x0, y0, h0] = this._from;
    let heading = h1;
    if (h0 !== null && h1 !== null) {
      const turn = ((((h1 - h0) % 360) + 540) % 360) - 180; // the short way round
      heading = h0 + turn * k;
    }
    return [x0 + (x1 - x0) * k, y0 + (y1 - y0) * k, heading];
  }

  /** The reported fields other than bookkeeping, in the order the device sent them. */
  fields() {
    return Object.entries(this.state).filter(([key]) => !BOOKKEEPING.has(key));
  }
}

export class Fleet {
  constructor() {
    this.devices = new Map();
    this.membership = 0; // grows whenever a device comes or goes
    this.changed = 0; // grows with every applied frame
    this._skew = null;
    this._counts = null;
  }

  /** Applies one WebSocket frame (snapshot, update or removed). */
  applyFrame(frame) {
    const now = performance.now();
    if (frame.type === "removed") {
      for (const id of frame.devices) this._remove(id);
    } else {
      if (frame.type === "snapshot") {
        const present = new Set(frame.devices.map((state) => state.deviceId));
        for (const id of [...this.devices.keys()]) if (!present.has(id)) this._remove(id);
      } else {
        this._learnSkew(frame.devices);
      }
      for (const state of frame.devices) this._device(state.deviceId).apply(state, now);
    }
    this.changed += 1;
  }

  /** The server's clock now, in epoch seconds, as far as we can tell from its frames. */
  serverNow() {
    return Date.now() / 1000 - (this._skew ?? 0);
  }

  ageSeconds(device) {
    const seen = device.state.receivedAt ?? device.state.timestamp;
    return seen === undefined ? null : Math.max(0, this.serverNow() - seen);
  }

  isStale(device) {
    const age = this.ageSeconds(device);
    return age === null || age > STALE_SECONDS;
  }

  /** Per-device message rates from two readings of the server's per-device counters. */
  updateRates(perDevice, atMs) {
    const previous = this._counts;
    this._counts = { perDevice, atMs };
    if (!previous) return;
    const seconds = (atMs - previous.atMs) / 1000;
    for (const device of this.devices.values()) {
      const now = perDevice[device.id];
      const before = previous.perDevice[device.id] ?? 0;
      device.rate = now === undefined || seconds <= 0 ? null : Math.max(0, now - before) / seconds;
    }
  }

  _learnSkew(states) {
    // An update goes out within milliseconds of the server receiving it, so the smallest
    // (our clock - receivedAt) seen is the clock difference plus the fastest delivery.
    const now = Date.now() / 1000;
    for (const state of states) {
      if (typeof state.receivedAt !== "number") continue;
      const skew = now - state.receivedAt;
      if (this._skew === null || skew < this._skew) this._skew = skew;
    }
  }

  _device(id) {
    let device = this.devices.get(id);
    if (!device) {
      device = new Device(id);
      this.devices.set(id, device);
      this.membership += 1;
    }
    return device;
  }

  _remove(id) {
    if (this.devices.delete(id)) this.membership += 1;
  }
}
