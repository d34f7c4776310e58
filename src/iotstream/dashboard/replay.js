// The fleet as history had it at one moment of a replay. It has the same face as the live
// `Fleet` (devices with a state, a trail and a marker position; `serverNow`, `isStale`,
// `ageSeconds`), so the plane, the list and the details panel draw it as they draw the live
// fleet. Time here is device time (epoch seconds), the time the history API windows on.

import { colorIndex } from "./colors.js";
import { STALE_SECONDS, TRAIL_SECONDS, trailBounds } from "./fleet.js";

const TRAIL_SPACING = 0.2; // seconds between drawn trail points, as in the live trail
const BOOKKEEPING = new Set(["deviceId", "timestamp", "receivedAt"]);

/** The trail of a replayed device: its history points of the last TRAIL_SECONDS before now. */
class ReplayTrail {
  constructor(device) {
    this.device = device;
  }

  /** Calls `visit(t, x, y)` for each point up to the replay time, oldest first. */
  forEach(visit) {
    const { t, x, y, index } = this.device;
    if (index < 0) return;
    const now = this.device.replay.time;
    let i = lowerBound(t, now - TRAIL_SECONDS, 0, index + 1);
    let last = -Infinity;
    for (; i <= index; i += 1) {
      // A 10 Hz robot has 80 points in a trail: keep about the live trail's 40.
      if (t[i] - last < TRAIL_SPACING && i !== index) continue;
      last = t[i];
      visit(t[i], x[i], y[i]);
    }
  }

  bounds(since) {
    return trailBounds(this, since);
  }
}

export class ReplayDevice {
  constructor(replay, id, readings) {
    this.replay = replay;
    this.id = id;
    this.color = colorIndex(id);
    this.readings = readings; // the history points with a position, in device time order
    this.t = Float64Array.from(readings, (r) => r.timestamp);
    this.x = Float64Array.from(readings, (r) => r.x);
    this.y = Float64Array.from(readings, (r) => r.y);
    this.trail = new ReplayTrail(this);
    this.rate = null;
    this.index = -1; // the last reading at or before the replay time
    this.screen = null;
  }

  get hasPosition() {
    return this.index >= 0;
  }

  /** The reading the device last sent by the replay time (its fields, as a live state). */
  get state() {
    return this.index >= 0 ? this.readings[this.index] : { deviceId: this.id };
  }

  seek(time) {
    // Playing forward moves a step or two: look near the last index before searching.
    const { t } = this;
    let i = this.index;
    if (i >= 0 && t[i] <= time && (i + 1 >= t.length || t[i + 1] > time)) return;
    if (i + 1 < t.length && t[i + 1] <= time && (i + 2 >= t.length || t[i + 2] > time)) {
      this.index = i + 1;
      return;
    }
    this.index = upperBound(t, time) - 1;
  }

  /** `[x, y, heading]` of the marker: between the readings around the replay time. */
  position() {
    const i = this.index;
    const { t, x, y } = this;
    const heading = headingOf(this.readings[i]);
    const next = i + 1;
    // Across a silence the robot is shown where it last was, not sliding towards the next.
    if (next >= t.length || t[next] - t[i] > STALE_SECONDS || t[next] <= t[i]) {
      return [x[i], y[i], heading];
    }
    const k = Math.min(1, Math.max(0, (this.replay.time - t[i]) / (t[next] - t[i])));
    const nextHeading = headingOf(this.readings[next]);
    let h = heading;
    if (heading !== null && nextHeading !== null) {
      const turn = ((((nextHeading - heading) % 360) + 540) % 360) - 180; // the short way round
      h = heading + turn * k;
    }
    return [x[i] + (x[next] - x[i]) * k, y[i] + (y[next] - y[i]) * k, h];
  }

  fields() {
    return Object.entries(this.state).filter(([key]) => !BOOKKEEPING.has(key));
  }
}

export class ReplayFleet {
  constructor() {
    this.devices = new Map();
    this.membership = 0;
    this.changed = 0;
    this.time = 0;
    this.start = 0;
    this.end = 0;
    this.readings = 0;
    this.first = null; // device time of the first reading in the window
    this._extent = null;
  }

  /**
   * Replaces the history with `points` (the API's points, in device time order, each with its
   * `deviceId`) of the window `start`..`end`, and goes to its start.
   */
  load(points, start, end) {
    const byDevice = new Map();
    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    let count = 0;
    let first = Infinity;
    for (const point of points) {
      // A reading of another field alone (sensors/{id}/motorRPM) has no place on the plane.
      if (typeof point.x !== "number" || typeof point.y !== "number") continue;
      let list = byDevice.get(point.deviceId);
      if (!list) byDevice.set(point.deviceId, (list = []));
      list.push(point);
      count += 1;
      first = Math.min(first, point.timestamp);
      minX = Math.min(minX, point.x);
      maxX = Math.max(maxX, point.x);
      minY = Math.min(minY, point.y);
      maxY = Math.max(maxY, point.y);
    }
    this.devices = new Map([...byDevice].map(([id, list]) => [id, new ReplayDevice(this, id, list)]));
    this._extent = count === 0 ? null : [minX, minY, maxX, maxY];
    this.readings = count;
    this.start = start;
    this.end = end;
    this.first = first === Infinity ? null : first;
    this.membership += 1;
    this.seek(start);
  }

  clear() {
    this.load([], this.start, this.end);
  }

  seek(time) {
    this.time = Math.min(this.end, Math.max(this.start, time));
    for (const device of this.devices.values()) device.seek(this.time);
    this.changed += 1;
  }

  /** `[minX, minY, maxX, maxY]` of every reading in the window: the plane fits to it. */
  extent() {
    return this._extent;
  }

  /** "Now" for ages, staleness and trail fading is the replay time. */
  serverNow() {
    return this.time;
  }

  ageSeconds(device) {
    return device.index < 0 ? null : Math.max(0, this.time - device.t[device.index]);
  }

  isStale(device) {
    const age = this.ageSeconds(device);
    return age === null || age > STALE_SECONDS;
  }

  updateRates() {}
}

function headingOf(reading) {
  return typeof reading.heading === "number" ? reading.heading : null;
}

/** The first index in `values[from..to)` (sorted) whose value is >= `target`. */
function lowerBound(values, target, from = 0, to = values.length) {
  let lo = from;
  let hi = to;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (values[mid] < target) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The first index whose value is > `target`. */
function upperBound(values, target) {
  let lo = 0;
  let hi = values.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (values[mid] <= target) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
