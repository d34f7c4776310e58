// The x/y plane on a canvas: a metric grid, an optional floor plan, every robot with its trail.
//
// Robots report local x/y in metres (y up, heading in degrees counter-clockwise from +x), so
// this is a plain Cartesian view, not a map. Drawing is batched: trails and markers go into
// one path per colour (and per fade band), so a thousand robots cost a few dozen strokes.

import { PALETTE, SELECTED_COLOR, STALE_COLOR } from "./colors.js";
import { TRAIL_SECONDS } from "./fleet.js";
import { formatMetres } from "./format.js";

const BACKGROUND = "#0b1220";
const GRID_MINOR = "rgba(148, 163, 184, 0.07)";
const GRID_MAJOR = "rgba(148, 163, 184, 0.16)";
const AXIS = "rgba(148, 163, 184, 0.4)";
const TEXT = "#cbd5e1";
const MUTED = "#8a9ab5";
const TRAIL_BANDS = 5; // the fade is drawn in steps: one stroke per colour and step
// A crowded plane (more robots on screen than CROWDED_ABOVE, until fewer than CROWDED_BELOW,
// so labels do not flicker at the edge) is drawn for speed: ids would be unreadable, so only
// the selected one is labelled; trails and outlines are hairlines, which a CPU rasteriser
// draws several times faster than wider strokes; and the canvas has one pixel per CSS pixel
// on HiDPI screens too. With a thousand robots that is 50-60 fps instead of 12-15.
const CROWDED_ABOVE = 200;
const CROWDED_BELOW = 160;
const HIT_RADIUS = 14;
// Room around a fitted fleet: labels extend to the right, the zoom buttons sit top right, the
// axis values and the scale bar at the bottom.
const FIT_MARGIN = { left: 48, right: 120, top: 40, bottom: 64 };
const MIN_FIT_SPAN = 10; // metres: a single robot is not zoomed in to a dot's width
const SCALE_LIMITS = [0.02, 5000]; // pixels per metre

export class Plane {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {import("./fleet.js").Fleet} fleet
   * @param {{onSelect: (id: string) => void, onFollowChange: (following: boolean) => void}} handlers
   */
  constructor(canvas, fleet, { onSelect, onFollowChange }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.fleet = fleet;
    this.onSelect = onSelect;
    this.onFollowChange = onFollowChange;
    this.center = [30, 20]; // until robots arrive, about the simulator's 60 x 40 m floor
    this.scale = 12;
    this.selected = null;
    this.following = false;
    this.background = null; // {image, originX, originY, scale, opacity}
    this.track = null; // a whole track to draw under the robots: {points: [x0, y0, x1, ...], color}
    this.trackDrawn = 0; // vertices of the track in the last frame drawn
    // Layers of other modules, each with `draw(plane, onScreen, crowded)`: `floor` over the
    // floor plan and under the grid (the heatmap), `paths` under the trails (trips, stops),
    // `ahead` over the trails and under the markers (predicted positions).
    this.layers = { floor: [], paths: [], ahead: [] };
    this.invalid = true;
    this.width = 0;
    this.height = 0;
    this._autoFit = true; // until the user moves the view, it fits the fleet as it arrives
    this._crowded = false;
    this._fittedMembership = -1;
    this._pointer = null;
    this._drag = null;
    this._listen();
  }

  toScreen(x, y) {
    return [
      this.width / 2 + (x - this.center[0]) * this.scale,
      this.height / 2 - (y - this.center[1]) * this.scale,
    ];
  }

  toWorld(sx, sy) {
    return [
      this.center[0] + (sx - this.width / 2) / this.scale,
      this.center[1] - (sy - this.height / 2) / this.scale,
    ];
  }

  /** Zoom by `factor`, keeping the point under (sx, sy) in place (the middle by default). */
  zoom(factor, sx = this.width / 2, sy = this.height / 2) {
    const [wx, wy] = this.toWorld(sx, sy);
    this.scale = Math.min(SCALE_LIMITS[1], Math.max(SCALE_LIMITS[0], this.scale * factor));
    if (!this.following) {
      this.center = [wx - (sx - this.width / 2) / this.scale, wy + (sy - this.height / 2) / this.scale];
    }
    this._userMoved();
  }

  /**
   * Draw another fleet (the live one or a replay, which has the same face). `view`, from
   * `view()`, puts back where the plane looked before; without it the plane fits the fleet.
   */
  setFleet(fleet, view = null) {
    this.fleet = fleet;
    this._fittedMembership = view ? view.fittedMembership : -1;
    this._autoFit = view ? view.autoFit : true;
    if (view) {
      this.center = [...view.center];
      this.scale = view.scale;
    }
    this.invalid = true;
  }

  /** Where the plane looks, for `setFleet` to come back to. */
  view() {
    return {
      center: [...this.center],
      scale: this.scale,
      autoFit: this._autoFit,
      fittedMembership: this._fittedMembership,
    };
  }

  /** Fit the fleet as soon as it has positions (again), until the user moves the view. */
  autoFit() {
    this._autoFit = true;
    this._fittedMembership = -1;
    this.invalid = true;
  }

  /** Show every robot. */
  fit() {
    this._fit();
    this._userMoved();
    this.setFollowing(false);
  }

  select(id) {
    this.selected = id;
    this.setFollowing(id !== null);
    this.invalid = true;
  }

  setFollowing(following) {
    if (this.following === following) return;
    this.following = following;
    this.invalid = true;
    this.onFollowChange(following);
  }

  /** Where the floor plan lies on screen: [left, top, width, height], or null. */
  backgroundRect() {
    const bg = this.background;
    if (!bg) return null;
    const heightM = bg.image.naturalHeight * bg.scale;
    const [left, top] = this.toScreen(bg.originX, bg.originY + heightM);
    return [left, top, bg.image.naturalWidth * bg.scale * this.scale, heightM * this.scale];
  }

  draw(nowMs) {
    this._resize();
    const { ctx, fleet } = this;
    if (this._autoFit && fleet.membership !== this._fittedMembership && this._fit()) {
      this._fittedMembership = fleet.membership;
    }
    const followed = this.following ? fleet.devices.get(this.selected) : null;
    if (followed?.hasPosition) {
      const [x, y] = followed.position(nowMs);
      this.center = [x, y];
    }
    ctx.fillStyle = BACKGROUND;
    ctx.fillRect(0, 0, this.width, this.height);
    this._drawBackground();
    const onScreen = this._placeDevices(nowMs);
    const crowded = onScreen.length > (this._crowded ? CROWDED_BELOW : CROWDED_ABOVE);
    this._crowded = crowded;
    for (const layer of this.layers.floor) layer.draw(this, onScreen, crowded);
    this._drawGrid();
    if (this.track || this.trackDrawn) this._drawTrack();
    for (const layer of this.layers.paths) layer.draw(this, onScreen, crowded);
    this._drawTrails(crowded);
    for (const layer of this.layers.ahead) layer.draw(this, onScreen, crowded);
    this._drawMarkers(onScreen, crowded);
    this._drawLabels(crowded ? onScreen.filter((d) => d.id === this.selected) : onScreen);
    this._drawScaleBar();
    this._drawPointer();
    this.invalid = false;
  }

  // -- layout ---------------------------------------------------------------------------

  _resize() {
    const dpr = this._crowded ? 1 : window.devicePixelRatio || 1;
    this.width = this.canvas.clientWidth;
    this.height = this.canvas.clientHeight;
    const pixels = [Math.round(this.width * dpr), Math.round(this.height * dpr)];
    // Setting the size reallocates the canvas: only when it really changed.
    if (this.canvas.width !== pixels[0] || this.canvas.height !== pixels[1]) {
      [this.canvas.width, this.canvas.height] = pixels;
    }
    this.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }

  /**
   * Frames every positioned device (a replay: everywhere its robots go in the window); false
   * when there is none (or no room yet).
   */
  _fit() {
    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    if (this.fleet.extent) {
      [minX, minY, maxX, maxY] = this.fleet.extent() ?? [Infinity, Infinity, -Infinity, -Infinity];
    } else {
      for (const device of this.fleet.devices.values()) {
        if (!device.hasPosition) continue;
        const { x, y } = device.state;
        minX = Math.min(minX, x);
        maxX = Math.max(maxX, x);
        minY = Math.min(minY, y);
        maxY = Math.max(maxY, y);
      }
    }
    if (minX === Infinity || this.width === 0) return false;
    const { left, right, top, bottom } = FIT_MARGIN;
    const room = [Math.max(1, this.width - left - right), Math.max(1, this.height - top - bottom)];
    this.scale = Math.min(
      room[0] / Math.max(MIN_FIT_SPAN, maxX - minX),
      room[1] / Math.max(MIN_FIT_SPAN, maxY - minY),
    );
    // The fleet's middle goes to the middle of the room left by the margins.
    this.center = [
      (minX + maxX) / 2 - (left + room[0] / 2 - this.width / 2) / this.scale,
      (minY + maxY) / 2 + (top + room[1] / 2 - this.height / 2) / this.scale,
    ];
    this.invalid = true;
    return true;
  }

  _userMoved() {
    this._autoFit = false;
    this.invalid = true;
  }

  /** Puts each device's screen position on it (`device.screen`); returns those in view. */
  _placeDevices(nowMs) {
    const onScreen = [];
    const margin = 20;
    for (const device of this.fleet.devices.values()) {
      if (!device.hasPosition) {
        device.screen = null;
        continue;
      }
      const [x, y, heading] = device.position(nowMs);
      const [sx, sy] = this.toScreen(x, y);
      device.screen = [sx, sy, heading];
      if (sx > -margin && sy > -margin && sx < this.width + margin && sy < this.height + margin) {
        onScreen.push(device);
      }
    }
    return onScreen;
  }

  // -- drawing --------------------------------------------------------------------------

  _drawBackground() {
    const rect = this.backgroundRect();
    if (!rect) return;
    this.ctx.globalAlpha = this.background.opacity;
    this.ctx.drawImage(this.background.image, ...rect);
    this.ctx.globalAlpha = 1;
  }

  _drawGrid() {
    const { ctx, width, height } = this;
    const major = niceStep(110 / this.scale);
    const minor = major / (leadingDigit(major) === 2 ? 4 : 5);
    const [x0, y1] = this.toWorld(0, 0);
    const [x1, y0] = this.toWorld(width, height);
    const lines = (step, style) => {
      ctx.beginPath();
      for (let x = Math.ceil(x0 / step) * step; x <= x1; x += step) {
        const sx = Math.round(this.toScreen(x, 0)[0]) + 0.5;
        ctx.moveTo(sx, 0);
        ctx.lineTo(sx, height);
      }
      for (let y = Math.ceil(y0 / step) * step; y <= y1; y += step) {
        const sy = Math.round(this.toScreen(0, y)[1]) + 0.5;
        ctx.moveTo(0, sy);
        ctx.lineTo(width, sy);
      }
      ctx.strokeStyle = style;
      ctx.lineWidth = 1;
      ctx.stroke();
    };
    if (minor * this.scale >= 8) lines(minor, GRID_MINOR);
    lines(major, GRID_MAJOR);

    const [ox, oy] = this.toScreen(0, 0);
    ctx.beginPath();
    ctx.moveTo(Math.round(ox) + 0.5, 0);
    ctx.lineTo(Math.round(ox) + 0.5, height);
    ctx.moveTo(0, Math.round(oy) + 0.5);
    ctx.lineTo(width, Math.round(oy) + 0.5);
    ctx.strokeStyle = AXIS;
    ctx.stroke();

    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = MUTED;
    ctx.textBaseline = "bottom";
    ctx.textAlign = "left";
    for (let x = Math.ceil(x0 / major) * major; x <= x1; x += major) {
      ctx.fillText(formatMetres(x, major), this.toScreen(x, 0)[0] + 3, height - 3);
    }
    ctx.textBaseline = "top";
    for (let y = Math.ceil(y0 / major) * major; y <= y1; y += major) {
      ctx.fillText(formatMetres(y, major), 4, this.toScreen(0, y)[1] + 2);
    }
  }

  /** The selected device's whole track (a replay's), thin and translucent, its vertices dotted. */
  _drawTrack() {
    const track = this.track;
    this.trackDrawn = 0;
    if (!track || track.points.length < 2) return;
    const { ctx, scale } = this;
    const { points } = track;
    const ox = this.width / 2 - this.center[0] * scale;
    const oy = this.height / 2 + this.center[1] * scale;
    const line = new Path2D();
    const dots = new Path2D();
    const dotted = points.length <= 4000; // vertices show how far the track was simplified
    for (let i = 0; i < points.length; i += 2) {
      const sx = ox + points[i] * scale;
      const sy = oy - points[i + 1] * scale;
      if (i === 0) line.moveTo(sx, sy);
      else line.lineTo(sx, sy);
      if (dotted) {
        dots.moveTo(sx + 2, sy);
        dots.arc(sx, sy, 2, 0, 2 * Math.PI);
      }
    }
    ctx.strokeStyle = PALETTE[track.color];
    ctx.fillStyle = PALETTE[track.color];
    ctx.lineWidth = 1.5;
    ctx.lineJoin = "round";
    ctx.globalAlpha = 0.5;
    ctx.stroke(line);
    if (dotted) ctx.fill(dots);
    ctx.globalAlpha = 1;
    this.trackDrawn = points.length / 2;
  }

  _drawTrails(crowded) {
    const { ctx } = this;
    const now = this.fleet.serverNow();
    const bands = PALETTE.map(() => Array.from({ length: TRAIL_BANDS }, () => new Path2D()));
    const [x0, y1] = this.toWorld(0, 0);
    const [x1, y0] = this.toWorld(this.width, this.height);
    // Stroking costs even off screen: zoomed in on a big fleet, most trails are skipped.
    const inView = (device) => {
      const [sx, sy] = device.screen;
      if (sx >= 0 && sy >= 0 && sx <= this.width && sy <= this.height) return true;
      const bounds = device.trail.bounds(now - TRAIL_SECONDS);
      return bounds !== null && bounds[0] <= x1 && bounds[2] >= x0 && bounds[1] <= y1 && bounds[3] >= y0;
    };
    let selected = null;
    for (const device of this.fleet.devices.values()) {
      if (!device.screen) continue;
      if (device.id === this.selected) {
        selected = device;
      } else if (inView(device)) {
        this._traceTrail(device, bands[device.color], now);
      }
    }
    ctx.lineCap = crowded ? "butt" : "round";
    ctx.lineJoin = crowded ? "miter" : "round";
    ctx.lineWidth = crowded ? 1 : 2;
    const stroke = (paths, color) => {
      ctx.strokeStyle = color;
      paths.forEach((path, band) => {
        ctx.globalAlpha = fade(band);
        ctx.stroke(path);
      });
    };
    bands.forEach((paths, color) => stroke(paths, PALETTE[color]));
    if (selected) {
      const paths = Array.from({ length: TRAIL_BANDS }, () => new Path2D());
      this._traceTrail(selected, paths, now);
      ctx.lineWidth = 3.5;
      stroke(paths, PALETTE[selected.color]);
    }
    ctx.globalAlpha = 1;
  }

  /** Adds the device's trail to `paths` (one per fade band, newest first), ending at its marker. */
  _traceTrail(device, paths, now) {
    let band = -1;
    let px = 0;
    let py = 0;
    const add = (age, sx, sy) => {
      const b = Math.min(TRAIL_BANDS - 1, Math.floor((age / TRAIL_SECONDS) * TRAIL_BANDS));
      if (band === -1) {
        paths[b].moveTo(sx, sy);
      } else {
        if (b !== band) paths[b].moveTo(px, py);
        paths[b].lineTo(sx, sy);
      }
      band = b;
      px = sx;
      py = sy;
    };
    device.trail.forEach((t, x, y) => {
      const age = now - t;
      if (age < TRAIL_SECONDS) add(Math.max(0, age), ...this.toScreen(x, y));
    });
    add(0, device.screen[0], device.screen[1]);
  }

  _drawMarkers(onScreen, crowded) {
    const { ctx } = this;
    const fresh = PALETTE.map(() => new Path2D());
    const stale = new Path2D();
    let selected = null;
    for (const device of onScreen) {
      if (device.id === this.selected) selected = device;
      markerShape(this.fleet.isStale(device) ? stale : fresh[device.color], device.screen);
    }
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = BACKGROUND;
    const paint = (path, color, outline = !crowded) => {
      ctx.fillStyle = color;
      ctx.fill(path);
      if (outline) ctx.stroke(path); // keeps overlapping markers apart
    };
    fresh.forEach((path, color) => paint(path, PALETTE[color]));
    paint(stale, STALE_COLOR);
    if (selected) {
      const [sx, sy] = selected.screen;
      const ring = new Path2D();
      ring.arc(sx, sy, 15, 0, 2 * Math.PI);
      ctx.strokeStyle = SELECTED_COLOR;
      ctx.lineWidth = 2;
      ctx.stroke(ring);
      const marker = new Path2D();
      markerShape(marker, selected.screen, 1.3);
      ctx.strokeStyle = BACKGROUND;
      ctx.lineWidth = 1.5;
      paint(marker, this.fleet.isStale(selected) ? STALE_COLOR : PALETTE[selected.color], true);
    }
  }

  _drawLabels(labelled) {
    const { ctx } = this;
    const isSelected = (device) => device.id === this.selected;
    // The selected robot's label goes last, on top of its neighbours'.
    const ordered = [...labelled.filter((d) => !isSelected(d)), ...labelled.filter(isSelected)];
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    ctx.lineWidth = 3;
    ctx.strokeStyle = BACKGROUND;
    ctx.lineJoin = "round";
    for (const device of ordered) {
      const big = isSelected(device);
      ctx.font = big ? "600 13px system-ui, sans-serif" : "600 11px system-ui, sans-serif";
      ctx.fillStyle = this.fleet.isStale(device) ? STALE_COLOR : big ? SELECTED_COLOR : TEXT;
      const [sx, sy] = device.screen;
      const at = [sx + (big ? 18 : 11), sy - (big ? 14 : 10)];
      ctx.strokeText(device.id, ...at);
      ctx.fillText(device.id, ...at);
    }
  }

  _drawScaleBar() {
    const { ctx } = this;
    const metres = niceStep(120 / this.scale);
    const length = metres * this.scale;
    const x = 48;
    const y = this.height - 30;
    ctx.beginPath();
    ctx.moveTo(x, y - 5);
    ctx.lineTo(x, y);
    ctx.lineTo(x + length, y);
    ctx.lineTo(x + length, y - 5);
    ctx.strokeStyle = TEXT;
    ctx.lineWidth = 2;
    ctx.lineJoin = "miter";
    ctx.stroke();
    ctx.font = "600 12px system-ui, sans-serif";
    ctx.fillStyle = TEXT;
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    ctx.fillText(formatMetres(metres, metres, true), x + length / 2, y - 4);
  }

  _drawPointer() {
    if (!this._pointer) return;
    const [x, y] = this.toWorld(...this._pointer);
    const { ctx } = this;
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = MUTED;
    ctx.textAlign = "right";
    ctx.textBaseline = "bottom";
    ctx.fillText(`x ${x.toFixed(2)} m   y ${y.toFixed(2)} m`, this.width - 12, this.height - 8);
  }

  // -- interaction ----------------------------------------------------------------------

  _listen() {
    const { canvas } = this;
    canvas.addEventListener("pointerdown", (event) => {
      canvas.setPointerCapture(event.pointerId);
      this._drag = { x: event.offsetX, y: event.offsetY, moved: false };
    });
    canvas.addEventListener("pointermove", (event) => {
      this._pointer = [event.offsetX, event.offsetY];
      this.invalid = true;
      const drag = this._drag;
      if (!drag) return;
      const dx = event.offsetX - drag.x;
      const dy = event.offsetY - drag.y;
      if (!drag.moved && Math.hypot(dx, dy) < 4) return; // a click that wobbled
      drag.moved = true;
      canvas.classList.add("dragging");
      this.setFollowing(false);
      this.center = [this.center[0] - dx / this.scale, this.center[1] + dy / this.scale];
      drag.x = event.offsetX;
      drag.y = event.offsetY;
      this._userMoved();
    });
    canvas.addEventListener("pointerup", (event) => {
      const drag = this._drag;
      this._drag = null;
      canvas.classList.remove("dragging");
      if (drag && !drag.moved) {
        const hit = this._hit(event.offsetX, event.offsetY);
        if (hit) this.onSelect(hit.id);
      }
    });
    canvas.addEventListener("pointercancel", () => {
      this._drag = null;
      canvas.classList.remove("dragging");
    });
    canvas.addEventListener("pointerleave", () => {
      this._pointer = null;
      this.invalid = true;
    });
    canvas.addEventListener(
      "wheel",
      (event) => {
        event.preventDefault();
        // Pixel-mode wheels and trackpads send small deltas, line-mode wheels big ones.
        const delta = event.deltaMode === 1 ? event.deltaY * 33 : event.deltaY;
        this.zoom(Math.exp(-delta * 0.0015), event.offsetX, event.offsetY);
      },
      { passive: false },
    );
  }

  _hit(sx, sy) {
    let best = null;
    let bestDistance = HIT_RADIUS;
    for (const device of this.fleet.devices.values()) {
      if (!device.screen) continue;
      const distance = Math.hypot(device.screen[0] - sx, device.screen[1] - sy);
      if (distance < bestDistance) {
        best = device;
        bestDistance = distance;
      }
    }
    return best;
  }
}

/** An arrow along the heading, or a dot when the device reports none. */
function markerShape(path, [sx, sy, heading], size = 1) {
  if (heading === null) {
    path.moveTo(sx + 5.5 * size, sy);
    path.arc(sx, sy, 5.5 * size, 0, 2 * Math.PI);
    return;
  }
  const a = (-heading * Math.PI) / 180; // screen y points down
  const point = (r, turn) => [sx + r * size * Math.cos(a + turn), sy + r * size * Math.sin(a + turn)];
  path.moveTo(...point(11, 0));
  path.lineTo(...point(8, 2.45));
  path.lineTo(...point(3, Math.PI));
  path.lineTo(...point(8, -2.45));
  path.closePath();
}

/** The newest band is the most opaque. */
function fade(band) {
  return 0.75 * (1 - band / TRAIL_BANDS) ** 1.5 + 0.04;
}

/** 1, 2 or 5 times a power of ten, at least `value`. */
function niceStep(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const digit of [1, 2, 5, 10]) if (digit * power >= value) return digit * power;
  return 10 * power;
}

function leadingDigit(step) {
  return Math.round(step / 10 ** Math.floor(Math.log10(step)));
}
