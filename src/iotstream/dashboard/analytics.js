// The selected robot's analytics from the lake: its summary, trips and stops over today (live
// mode, fetched again every REFRESH_MS, or ten times as long as the last answer took) or over
// the loaded window (history mode), listed in
// the details panel and drawn on the plane (a trip as a chord from where it started to where
// it ended, a stop as a disc that grows with its duration). With the ghost layer on, the
// panel also shows where the server's best model puts the robot next, with that model's
// evaluated error, and the plane marks that point with a cross.

import { getAnalysis } from "./api.js";
import { formatDistance, formatDuration, formatTime } from "./format.js";

const REFRESH_MS = 15_000;
const PREDICTION_REFRESH_MS = 2_000;
const LISTED = 50; // the newest trips and stops are listed; every one is drawn
const TRIP_COLOR = "#38bdf8";
const STOP_COLOR = "#fbbf24";
const HIGHLIGHT = "#ffffff";

export class DeviceAnalytics {
  /**
   * @param {HTMLElement} root the details panel's analysis section
   * @param {{
   *   plane: import("./plane.js").Plane,
   *   window: () => {start: number, end: number, label: string},
   *   history: () => boolean,
   *   predicting: () => number | null,
   * }} options `window()` is today in live mode and the loaded window in history mode;
   *   `predicting()` is the horizon to ask the server's prediction for (ghosts on, live
   *   mode), or null.
   */
  constructor(root, { plane, window, history, predicting }) {
    this.root = root;
    this.plane = plane;
    this.window = window;
    this.history = history;
    this.predicting = predicting;
    this.id = null;
    this.state = "idle";
    this.reason = "";
    this.result = null; // {deviceId, from, to, label, source, summary, trips, stops}
    this.prediction = null; // the prediction API's answer for the selected robot
    this.highlight = null; // the start time of the trip picked in the list
    this.drawn = { trips: 0, stops: 0, prediction: false };
    this.invalid = false;
    this._key = null;
    this._fetchedAt = -Infinity;
    this._refreshMs = REFRESH_MS;
    this._predictedAt = -Infinity;
    this._loading = null;
    this._predicting = null;
    this._rendered = "";

    this.title = root.querySelector("h3");
    this.statusLine = root.querySelector(".analysis-status");
    this.summaryList = root.querySelector(".summary");
    this.predictionLine = root.querySelector(".prediction");
    this.tripList = root.querySelector(".trips");
    this.stopList = root.querySelector(".stops");
    this.tripCount = root.querySelector('[data-count="trips"]');
    this.stopCount = root.querySelector('[data-count="stops"]');
    this.tripList.addEventListener("click", (event) => {
      const item = event.target.closest("li[data-start]");
      if (!item) return;
      const start = Number(item.dataset.start);
      this.highlight = this.highlight === start ? null : start;
      this.invalid = true;
      this.plane.invalid = true;
    });
  }

  /** Shows the analytics of `id` (null: none). */
  show(id) {
    if (id === this.id) return;
    this.id = id;
    this._loading?.abort();
    this._predicting?.abort();
    this._loading = this._predicting = null;
    this.result = null;
    this.prediction = null;
    this.highlight = null;
    this._key = null;
    this.state = "idle";
    this.invalid = true;
    this.plane.invalid = true;
  }

  /** Called a few times a second: fetches again when the window moved on or changed. */
  tick(nowMs) {
    if (this.id === null || this.window() === null) return;
    const key = this._wanted();
    const live = !this.history();
    const due = nowMs - this._fetchedAt > this._refreshMs;
    if (key !== this._key || (live && this._loading === null && due)) {
      this.load();
    }
    const horizon = this.predicting();
    if (horizon === null) {
      if (this.prediction !== null) {
        this.prediction = null;
        this.invalid = true;
        this.plane.invalid = true;
      }
    } else if (this._predicting === null && nowMs - this._predictedAt > PREDICTION_REFRESH_MS) {
      this.loadPrediction(horizon);
    }
  }

  /** Fetches the summary, trips and stops of the selected robot in the window. */
  async load() {
    const id = this.id;
    const span = this.window();
    if (id === null || span === null) return;
    this._loading?.abort();
    const controller = new AbortController();
    this._loading = controller;
    this._fetchedAt = performance.now();
    this._key = this._wanted();
    const { start, end, label } = span;
    if (this.result === null || this.result.deviceId !== id) this.state = "loading";
    this.invalid = true;
    const base = `/api/devices/${encodeURIComponent(id)}`;
    const query = `?from=${start}&to=${end}`;
    let answers;
    const asked = performance.now();
    try {
      answers = await Promise.all(
        ["summary", "trips", "stops"].map((what) => getAnalysis(`${base}/${what}${query}`, controller.signal)),
      );
      this._refreshMs = Math.max(REFRESH_MS, 10 * (performance.now() - asked));
    } catch (error) {
      if (error.name === "AbortError") return;
      throw error;
    } finally {
      if (this._loading === controller) this._loading = null;
    }
    if (controller.signal.aborted || this.id !== id) return;
    const failed = answers.find((answer) => !answer.ok);
    if (failed) {
      this.result = null;
      this.state = failed.status === 503 ? "off" : "failed";
      this.reason = failed.reason;
    } else {
      const [summary, trips, stops] = answers.map((answer) => answer.body);
      this.result = {
        deviceId: id, from: summary.from, to: summary.to, label, source: summary.source,
        summary: summary.summary, trips: trips.trips, stops: stops.stops,
      };
      this.state = "loaded";
    }
    this.invalid = true;
    this.plane.invalid = true;
  }

  async loadPrediction(horizon) {
    const id = this.id;
    const controller = new AbortController();
    this._predicting = controller;
    this._predictedAt = performance.now();
    let answer;
    try {
      answer = await getAnalysis(
        `/api/devices/${encodeURIComponent(id)}/prediction?horizon=${horizon}`,
        controller.signal,
      );
    } catch (error) {
      if (error.name === "AbortError") return;
      throw error;
    } finally {
      if (this._predicting === controller) this._predicting = null;
    }
    if (controller.signal.aborted || this.id !== id || this.predicting() === null) return;
    this.prediction = answer.ok ? answer.body : { failed: answer.reason };
    this.invalid = true;
    this.plane.invalid = true;
  }

  /** Updates the panel when what it shows changed. */
  render() {
    this.invalid = false;
    this.root.hidden = this.id === null;
    if (this.id === null) return;
    const result = this.result;
    const label = result?.label ?? this.window()?.label ?? "the history window";
    const view = {
      label, state: this.state, reason: this.reason, summary: result?.summary,
      trips: result?.trips.length, stops: result?.stops.length, first: result?.trips.at(-1)?.start,
      lastStop: result?.stops.at(-1)?.start, prediction: this.prediction, highlight: this.highlight,
      to: result?.to,
    };
    const key = JSON.stringify(view);
    if (key === this._rendered) return;
    this._rendered = key;
    this.title.textContent = label[0].toUpperCase() + label.slice(1);
    this.statusLine.dataset.state = this.state;
    this.statusLine.textContent =
      this.state === "loading" ? "loading…"
        : this.state === "off" ? `unavailable: ${this.reason}`
          : this.state === "failed" ? `failed: ${this.reason}`
            : "";
    this._renderSummary(result?.summary ?? null, result !== null);
    this._renderPrediction();
    this._renderList(this.tripList, this.tripCount, result?.trips ?? [], tripItem);
    this._renderList(this.stopList, this.stopCount, result?.stops ?? [], stopItem);
  }

  /** Draws the trips and stops (and the server's prediction) of the selected robot. */
  draw(plane) {
    this.drawn = { trips: 0, stops: 0, prediction: false };
    const result = this.result;
    if (this.id === null || result === null || result.deviceId !== this.id) return;
    if (!plane.fleet.devices.has(this.id)) return;
    const { ctx } = plane;
    const stops = new Path2D();
    for (const stop of result.stops) {
      const [sx, sy] = plane.toScreen(stop.x, stop.y);
      const radius = Math.min(14, Math.max(4, 4 + 2 * Math.log2(Math.max(1, stop.duration / 10))));
      stops.moveTo(sx + radius, sy);
      stops.arc(sx, sy, radius, 0, 2 * Math.PI);
    }
    ctx.save();
    ctx.fillStyle = STOP_COLOR;
    ctx.strokeStyle = STOP_COLOR;
    ctx.globalAlpha = 0.25;
    ctx.fill(stops);
    ctx.globalAlpha = 0.8;
    ctx.lineWidth = 1.5;
    ctx.stroke(stops);
    const chords = new Path2D();
    const ends = new Path2D();
    let highlighted = null;
    for (const trip of result.trips) {
      const from = plane.toScreen(trip.startX, trip.startY);
      const to = plane.toScreen(trip.endX, trip.endY);
      if (trip.start === this.highlight) highlighted = [from, to];
      chords.moveTo(...from);
      chords.lineTo(...to);
      ends.moveTo(from[0] + 3.5, from[1]);
      ends.arc(from[0], from[1], 3.5, 0, 2 * Math.PI);
      ends.moveTo(to[0] + 2.5, to[1]);
      ends.arc(to[0], to[1], 2.5, 0, 2 * Math.PI);
    }
    ctx.strokeStyle = TRIP_COLOR;
    ctx.globalAlpha = 0.7;
    ctx.setLineDash([6, 4]); // a chord, not the path the robot took
    ctx.stroke(chords);
    ctx.setLineDash([]);
    ctx.globalAlpha = 0.9;
    ctx.stroke(ends);
    if (highlighted) {
      const [from, to] = highlighted;
      ctx.strokeStyle = HIGHLIGHT;
      ctx.lineWidth = 3;
      ctx.beginPath();
      ctx.moveTo(...from);
      ctx.lineTo(...to);
      ctx.stroke();
    }
    const predicted = this.prediction?.prediction;
    if (predicted && !this.history()) {
      const [sx, sy] = plane.toScreen(predicted.x, predicted.y);
      ctx.strokeStyle = HIGHLIGHT;
      ctx.globalAlpha = 0.9;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      ctx.moveTo(sx - 6, sy - 6);
      ctx.lineTo(sx + 6, sy + 6);
      ctx.moveTo(sx + 6, sy - 6);
      ctx.lineTo(sx - 6, sy + 6);
      ctx.stroke();
      this.drawn.prediction = true;
    }
    ctx.restore();
    this.drawn.trips = result.trips.length;
    this.drawn.stops = result.stops.length;
  }

  /** Read-only state for tests and measuring. */
  debug() {
    const result = this.result;
    return {
      deviceId: this.id,
      state: this.state,
      reason: this.reason,
      from: result?.from ?? null,
      to: result?.to ?? null,
      label: result?.label ?? null,
      source: result?.source ?? null,
      summary: result?.summary ?? null,
      trips: result?.trips ?? [],
      stops: result?.stops ?? [],
      prediction: this.prediction,
      highlight: this.highlight,
      drawn: { ...this.drawn },
    };
  }

  // -- internals --------------------------------------------------------------------------

  /** What the panel should show: another device or (history mode) another window refetches. */
  _wanted() {
    const history = this.history();
    return JSON.stringify([this.id, history, history ? this.window()?.start : null]);
  }

  _renderSummary(summary, loaded) {
    if (summary === null) {
      const empty = document.createElement("dd");
      empty.className = "none";
      empty.textContent = loaded ? "no readings" : "";
      this.summaryList.replaceChildren(empty);
      return;
    }
    const rows = [
      ["distance", formatDistance(summary.distance)],
      ["moving", formatDuration(summary.movingTime)],
      ["stopped", formatDuration(summary.stoppedTime)],
      ["top speed", `${summary.maxSpeed.toFixed(2)} m/s`],
      ["readings", summary.readings.toLocaleString()],
      ["gaps", String(summary.gaps)],
    ];
    this.summaryList.replaceChildren(
      ...rows.map(([name, value]) => {
        const item = document.createElement("div");
        const term = document.createElement("dt");
        term.textContent = name;
        const definition = document.createElement("dd");
        definition.textContent = value;
        definition.dataset.summary = name;
        item.append(term, definition);
        return item;
      }),
    );
  }

  _renderPrediction() {
    const answer = this.prediction;
    const line = this.predictionLine;
    line.hidden = answer === null || this.history();
    if (line.hidden) return;
    if (answer.failed) {
      line.textContent = `Prediction unavailable: ${answer.failed}`;
      return;
    }
    if (answer.prediction === null) {
      line.textContent = "No recent position to predict from.";
      return;
    }
    const { x, y } = answer.prediction;
    const error = answer.error;
    const quality = error
      ? ` · error ${error.fde.toFixed(2)} m at ${error.horizon} s (${error.source === "on-demand" ? "evaluated now" : "from analyze"})`
      : "";
    line.textContent = `In ${answer.horizon} s: x ${x.toFixed(2)}, y ${y.toFixed(2)} · ${answer.model}${quality}`;
  }

  _renderList(list, count, items, render) {
    count.textContent = items.length > LISTED ? `${LISTED} newest of ${items.length}` : String(items.length);
    const shown = items.slice(-LISTED).reverse(); // newest first
    list.replaceChildren(...shown.map((item) => render(item, this.highlight)));
  }
}

function tripItem(trip, highlight) {
  const item = document.createElement("li");
  item.dataset.start = String(trip.start);
  item.setAttribute("aria-selected", String(trip.start === highlight));
  item.title = `from (${trip.startX.toFixed(2)}, ${trip.startY.toFixed(2)}) to (${trip.endX.toFixed(2)}, ${trip.endY.toFixed(2)})`;
  const when = document.createElement("span");
  when.className = "when";
  when.textContent = `${clock(trip.start)} → ${clock(trip.end)}`;
  const what = document.createElement("span");
  what.className = "what";
  what.textContent =
    `${formatDistance(trip.distance)} · ${formatDuration(trip.duration)} · ` +
    `${trip.avgSpeed.toFixed(2)} m/s`;
  item.append(when, what);
  return item;
}

function stopItem(stop) {
  const item = document.createElement("li");
  item.dataset.start = String(stop.start);
  const when = document.createElement("span");
  when.className = "when";
  when.textContent = clock(stop.start);
  const what = document.createElement("span");
  what.className = "what";
  what.textContent = `${formatDuration(stop.duration)} at (${stop.x.toFixed(1)}, ${stop.y.toFixed(1)})`;
  item.append(when, what);
  return item;
}

/** Wall-clock time to the second. */
function clock(epochSeconds) {
  return formatTime(epochSeconds).replace(/\.\d+$/, "");
}
