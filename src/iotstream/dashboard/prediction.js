// Ghost markers: where each moving robot will be in HORIZON_S seconds, by the constant-velocity
// model (the server's `velocity`): its velocity over the last second of its trail,
// carried forward from where its marker is drawn. It is computed here, from the live stream
// (or from the replay in history mode), so it costs no request and scales to a thousand
// robots: one velocity per device per report, and one path per frame for every ghost.
// The selected robot's prediction by the server's best model is fetched by analytics.js.

const HORIZON_S = 2;
const VELOCITY_WINDOW_S = 1; // seconds of trail the velocity is measured over
const MIN_SPAN_S = 0.15; // shorter than this, two reports say nothing about speed
const MOVING_SPEED = 0.2; // m/s: a robot starts moving above this (the API's startSpeed)
const GHOST_COLOR = "rgba(226, 232, 240, 0.75)";

export class GhostLayer {
  /**
   * @param {HTMLButtonElement} toggle the plane's `ghost` button
   * @param {{plane: import("./plane.js").Plane}} options
   */
  constructor(toggle, { plane }) {
    this.toggleButton = toggle;
    this.plane = plane;
    this.on = false;
    this.horizon = HORIZON_S;
    this._shown = []; // the devices with a ghost in the last frame drawn
    this._plane = plane;
    this._velocities = new WeakMap(); // device -> {state, v: [vx, vy] | null}
    toggle.addEventListener("click", () => this.setOn(!this.on));
  }

  setOn(on) {
    this.on = on;
    this.toggleButton.setAttribute("aria-pressed", String(on));
    this._shown.length = 0;
    this.plane.invalid = true;
  }

  /**
   * `[vx, vy]` in m/s over the last second of the device's trail, or null when it has too
   * little of one. Measured once per report: cached until the device's state changes.
   */
  velocity(device) {
    const cached = this._velocities.get(device);
    if (cached && cached.state === device.state) return cached.v;
    const span = device.trail.recent ? device.trail.recent(VELOCITY_WINDOW_S) : recent(device.trail);
    let v = null;
    if (span !== null) {
      const [t0, x0, y0, t1, x1, y1] = span;
      const dt = t1 - t0;
      if (dt >= MIN_SPAN_S) v = [(x1 - x0) / dt, (y1 - y0) / dt];
    }
    this._velocities.set(device, { state: device.state, v });
    return v;
  }

  /**
   * Draws a ring where each moving robot on screen will be, joined to its marker; after the
   * trails, under the markers. A crowded plane gets hairline ticks instead of rings: a CPU
   * rasteriser strokes a thousand arcs several times slower.
   */
  draw(plane, onScreen, crowded) {
    const shown = this._shown;
    shown.length = 0;
    if (!this.on) return;
    const { ctx, scale } = plane;
    const fleet = plane.fleet;
    const path = new Path2D();
    let selected = null;
    for (const device of onScreen) {
      if (fleet.isStale(device)) continue;
      const v = this.velocity(device);
      if (v === null || Math.hypot(v[0], v[1]) < MOVING_SPEED) continue;
      const [sx, sy] = device.screen;
      const dx = v[0] * this.horizon;
      const dy = v[1] * this.horizon;
      const gx = sx + dx * scale;
      const gy = sy - dy * scale;
      shown.push(device);
      if (device.id === plane.selected) {
        selected = [sx, sy, gx, gy];
        continue;
      }
      path.moveTo(sx, sy);
      path.lineTo(gx, gy);
      if (crowded) {
        path.rect(gx - 1.5, gy - 1.5, 3, 3);
      } else {
        path.moveTo(gx + 4.5, gy);
        path.arc(gx, gy, 4.5, 0, 2 * Math.PI);
      }
    }
    ctx.strokeStyle = GHOST_COLOR;
    ctx.lineWidth = 1;
    ctx.stroke(path);
    if (selected) {
      const [sx, sy, gx, gy] = selected;
      const ring = new Path2D();
      ring.moveTo(sx, sy);
      ring.lineTo(gx, gy);
      ring.moveTo(gx + 7, gy);
      ring.arc(gx, gy, 7, 0, 2 * Math.PI);
      ctx.lineWidth = 2;
      ctx.stroke(ring);
    }
  }

  /** Read-only state for tests and measuring. */
  debug() {
    const ghosts = {};
    for (const device of this._shown) {
      const [x, y] = this._plane.toWorld(device.screen[0], device.screen[1]);
      const v = this.velocity(device);
      if (v === null) continue;
      const [vx, vy] = v;
      ghosts[device.id] = [x + vx * this.horizon, y + vy * this.horizon];
    }
    return { on: this.on, horizon: this.horizon, ghosts };
  }
}

/** `trail.recent(seconds)` for a trail that only has `forEach` (a replayed one). */
function recent(trail) {
  const points = [];
  trail.forEach((t, x, y) => points.push(t, x, y));
  if (points.length === 0) return null;
  const end = points.length - 3;
  let at = end;
  while (at >= 3 && points[at - 3] >= points[end] - VELOCITY_WINDOW_S) at -= 3;
  return [points[at], points[at + 1], points[at + 2], points[end], points[end + 1], points[end + 2]];
}
