// The heatmap layer: where robots spent their time, from GET /api/analytics/heatmap, drawn on
// the plane under the robots. Each answer is painted once into an offscreen canvas with one
// pixel per cell (or per block of cells, for a very wide floor); a frame only draws that
// image scaled onto the plane, one drawImage, so the layer costs the same with a thousand
// robots as with one.
//
// It shows the whole fleet or the selected robot, over the last hour or today in live mode
// (fetched again every REFRESH_MS, or ten times as long as the last answer took, so that a
// big fleet's day does not keep the server busy), and over the loaded window in history mode.

import { getAnalysis } from "./api.js";
import { formatDuration } from "./format.js";

const REFRESH_MS = 30_000;
const MAX_SIDE = 2048; // pixels of the offscreen image; wider grids merge blocks of cells
const OPACITY = 0.75;
// Cold to hot, by dwell on a log scale: [stop, r, g, b, alpha]. An empty cell stays clear.
const RAMP = [
  [0, 30, 64, 175, 0.35],
  [0.35, 14, 165, 233, 0.55],
  [0.6, 250, 204, 21, 0.75],
  [0.85, 249, 115, 22, 0.85],
  [1, 239, 68, 68, 0.95],
];

export class HeatmapLayer {
  /**
   * @param {HTMLElement} root the heatmap options (`#heatmap`)
   * @param {HTMLButtonElement} toggle the plane's `heat` button
   * @param {{
   *   plane: import("./plane.js").Plane,
   *   selected: () => string | null,
   *   window: (range: string) => {start: number, end: number, label: string},
   *   history: () => boolean,
   * }} options `window(range)` is the window to show: today or the last hour in live mode,
   *   the loaded history window in history mode (`history()` says which).
   */
  constructor(root, toggle, { plane, selected, window, history }) {
    this.root = root;
    this.toggleButton = toggle;
    this.plane = plane;
    this.selected = selected;
    this.window = window;
    this.history = history;
    this.on = false;
    this.scope = "fleet"; // or "device": the selected robot
    this.range = "hour"; // or "today"; history mode always shows its window
    this.cell = 1;
    this.status = { state: "off", text: "" };
    this.image = null; // the offscreen canvas, one pixel per block of cells
    this.rect = null; // where it lies on the plane: [x0, y0, x1, y1] in metres
    this.result = null; // {cells, maxDwell, readings, from, to, source, devices, cell, block}
    this.drawn = 0; // images drawn by the plane: 1 when the last frame showed the layer
    this._fetchedAt = -Infinity;
    this._refreshMs = REFRESH_MS;
    this._key = null; // what the image shows, to know when to fetch again
    this._loading = null;

    this.form = root;
    this.statusLine = root.querySelector(".heatmap-status");
    toggle.addEventListener("click", () => this.setOn(!this.on));
    root.addEventListener("change", () => {
      const { scope, range, cell } = root.elements;
      this.scope = scope.value;
      this.range = range.value;
      this.cell = Number(cell.value);
      this.refresh();
    });
    root.addEventListener("submit", (event) => event.preventDefault());
  }

  setOn(on) {
    this.on = on;
    this.toggleButton.setAttribute("aria-pressed", String(on));
    this.root.hidden = !on;
    if (on) {
      this.refresh();
    } else {
      this._loading?.abort();
      this._loading = null;
      this.image = null;
      this.rect = null;
      this.result = null;
      this._key = null;
      this._setStatus("off", "");
    }
    this.plane.invalid = true;
  }

  /** Called a few times a second: fetches again when what it should show changed or aged. */
  tick(nowMs) {
    if (!this.on) return;
    const key = this._wanted();
    const stale = !this.history() && nowMs - this._fetchedAt > this._refreshMs;
    if (key !== this._key || (stale && this._loading === null)) this.refresh();
  }

  /** Fetches the heatmap of what the options say and paints it. */
  async refresh() {
    if (!this.on) return;
    this._loading?.abort();
    this._fetchedAt = performance.now();
    const key = this._wanted();
    this._key = key;
    this.root.elements.range.disabled = this.history();
    const device = this.scope === "device" ? this.selected() : null;
    if (this.scope === "device" && device === null) {
      this.image = null;
      this.result = null;
      this.plane.invalid = true;
      this._setStatus("idle", "Select a robot to see where it went.");
      return;
    }
    const span = this.window(this.range);
    if (span === null) {
      this.image = null;
      this.result = null;
      this.plane.invalid = true;
      this._setStatus("idle", "Waiting for the history window…");
      return;
    }
    const { start, end, label } = span;
    const controller = new AbortController();
    this._loading = controller;
    const devices = device === null ? "" : `&devices=${encodeURIComponent(device)}`;
    const path = `/api/analytics/heatmap?from=${start}&to=${end}&cell=${this.cell}${devices}`;
    this._setStatus("loading", "loading…");
    let answer;
    const asked = performance.now();
    try {
      answer = await getAnalysis(path, controller.signal);
      this._refreshMs = Math.max(REFRESH_MS, 10 * (performance.now() - asked));
    } catch (error) {
      if (error.name === "AbortError") return;
      throw error;
    } finally {
      if (this._loading === controller) this._loading = null;
    }
    if (controller.signal.aborted || !this.on) return;
    if (!answer.ok) {
      this.image = null;
      this.result = null;
      this.plane.invalid = true;
      const off = answer.status === 503;
      this._setStatus(off ? "off" : "failed", `${off ? "Heatmap unavailable" : "Heatmap failed"}: ${answer.reason}`);
      return;
    }
    this._paint(answer.body);
    const who = device ?? "the fleet";
    const { readings, maxDwell, cells } = this.result;
    this._setStatus(
      cells === 0 ? "empty" : "loaded",
      cells === 0
        ? `No readings of ${who} ${label}.`
        : `${who}, ${label}: ${readings.toLocaleString()} readings in ${cells.toLocaleString()} cells; ` +
            `the hottest ${this.cell} m cell held robots ${formatDuration(maxDwell)}.`,
    );
  }

  /** Draws the painted image onto the plane: one scaled drawImage. */
  draw(plane) {
    this.drawn = 0;
    if (!this.image || !this.rect) return;
    const [x0, y0, x1, y1] = this.rect;
    const [left, top] = plane.toScreen(x0, y1);
    const [right, bottom] = plane.toScreen(x1, y0);
    if (right < 0 || bottom < 0 || left > plane.width || top > plane.height) return;
    const { ctx } = plane;
    ctx.save();
    ctx.imageSmoothingEnabled = false; // cells stay squares when zoomed in
    ctx.globalAlpha = OPACITY;
    ctx.drawImage(this.image, left, top, right - left, bottom - top);
    ctx.restore();
    this.drawn = 1;
  }

  /** Read-only state for tests and measuring. */
  debug() {
    const result = this.result;
    return {
      on: this.on,
      scope: this.scope,
      range: this.history() ? "history" : this.range,
      status: this.status.state,
      message: this.status.text,
      cells: result?.cells ?? 0,
      readings: result?.readings ?? 0,
      maxDwell: result?.maxDwell ?? 0,
      from: result?.from ?? null,
      to: result?.to ?? null,
      devices: result?.devices ?? null,
      source: result?.source ?? null,
      cell: result?.cell ?? null,
      image: this.image ? [this.image.width, this.image.height] : null,
      rect: this.rect,
      drawn: this.drawn,
    };
  }

  // -- internals --------------------------------------------------------------------------

  /** What the layer should show now; a change means fetching again. */
  _wanted() {
    const device = this.scope === "device" ? this.selected() : null;
    const range = this.history() ? `history:${this.window(this.range)?.start}` : this.range;
    return JSON.stringify([this.scope, device, range, this.cell]);
  }

  /** Paints the answer's cells into the offscreen image: dwell per cell, log-scaled. */
  _paint(body) {
    const cells = body.cells;
    const cell = body.cell;
    let readings = 0;
    let iMin = Infinity, iMax = -Infinity, jMin = Infinity, jMax = -Infinity;
    for (const c of cells) {
      readings += c.readings;
      iMin = Math.min(iMin, c.i);
      iMax = Math.max(iMax, c.i);
      jMin = Math.min(jMin, c.j);
      jMax = Math.max(jMax, c.j);
    }
    const summary = {
      cells: cells.length, readings, maxDwell: 0, from: body.from, to: body.to,
      source: body.source, devices: body.devices, cell, block: 1,
    };
    this.result = summary;
    this.plane.invalid = true;
    if (cells.length === 0) {
      this.image = null;
      this.rect = null;
      return;
    }
    // A grid wider than MAX_SIDE merges square blocks of cells into one pixel.
    const block = Math.ceil(Math.max(iMax - iMin + 1, jMax - jMin + 1) / MAX_SIDE);
    const width = Math.floor((iMax - iMin) / block) + 1;
    const height = Math.floor((jMax - jMin) / block) + 1;
    const dwell = new Float64Array(width * height);
    for (const c of cells) {
      const px = Math.floor((c.i - iMin) / block);
      const py = height - 1 - Math.floor((c.j - jMin) / block); // image rows go down, y goes up
      // A cell with readings but no dwell (a lone reading) still shows, faintly.
      dwell[py * width + px] += Math.max(c.dwell, 1e-3);
    }
    let maxDwell = 0;
    for (const value of dwell) maxDwell = Math.max(maxDwell, value);
    const image = document.createElement("canvas");
    image.width = width;
    image.height = height;
    const context = image.getContext("2d");
    const pixels = context.createImageData(width, height);
    const scale = Math.log1p(maxDwell);
    for (let k = 0; k < dwell.length; k += 1) {
      if (dwell[k] === 0) continue;
      const [r, g, b, a] = ramp(scale > 0 ? Math.log1p(dwell[k]) / scale : 1);
      pixels.data.set([r, g, b, Math.round(a * 255)], k * 4);
    }
    context.putImageData(pixels, 0, 0);
    this.image = image;
    const size = cell * block;
    // Pixel column px holds cells iMin + px*block ...; the bottom row holds jMin ....
    this.rect = [iMin * cell, jMin * cell, iMin * cell + width * size, jMin * cell + height * size];
    summary.maxDwell = maxDwell;
    summary.block = block;
  }

  _setStatus(state, text) {
    this.status = { state, text };
    this.statusLine.dataset.state = state;
    if (this.statusLine.textContent !== text) this.statusLine.textContent = text;
  }
}

/** The ramp's colour at `t` in [0, 1]: [r, g, b, alpha]. */
function ramp(t) {
  for (let k = 1; k < RAMP.length; k += 1) {
    const [stop, ...high] = RAMP[k];
    if (t <= stop || k === RAMP.length - 1) {
      const [from, ...low] = RAMP[k - 1];
      const f = Math.min(1, Math.max(0, (t - from) / (stop - from)));
      return low.map((v, n) => (n < 3 ? Math.round(v + (high[n] - v) * f) : v + (high[n] - v) * f));
    }
  }
  return RAMP[RAMP.length - 1].slice(1);
}
