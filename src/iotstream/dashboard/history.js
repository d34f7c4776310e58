// History mode: load a window of the fleet's (or one device's) readings from the history API,
// page by page, and play it back on the plane with a time slider, play/pause and a speed.
// The selected device's whole track in the window is drawn simplified by the server
// (`simplify=<metres>`, about one screen pixel at the current zoom).
//
// The replay is a `ReplayFleet` that app.js hands to the plane, the list and the details panel
// instead of the live fleet; the live fleet keeps receiving WebSocket frames meanwhile, so
// going back to live shows the present at once.

import { getHistory } from "./api.js";
import { formatTime } from "./format.js";

const PAGE = 50_000; // readings per request
const MAX_READINGS = 500_000; // what a browser tab holds comfortably; longer windows are cut
const TRACK_POINTS_SHOWN = 5_000; // the debug hook lists the track's points up to this many
const MAX_TICK_MS = 1000; // a frame late by more (a hidden tab) does not jump the replay
const byId = new Intl.Collator(undefined, { numeric: true }).compare;

export class HistoryMode {
  /**
   * @param {HTMLElement} root the #history bar
   * @param {HTMLButtonElement} toggle the header's history button
   * @param {{
   *   replay: import("./replay.js").ReplayFleet,
   *   live: import("./fleet.js").Fleet,
   *   plane: import("./plane.js").Plane,
   *   selected: () => string | null,
   *   onEnter: () => void,
   *   onLeave: () => void,
   *   onLoad: () => void,
   * }} options
   */
  constructor(root, toggle, { replay, live, plane, selected, onEnter, onLeave, onLoad }) {
    this.root = root;
    this.toggleButton = toggle;
    this.replay = replay;
    this.live = live;
    this.plane = plane;
    this.selected = selected;
    this.onEnter = onEnter;
    this.onLeave = onLeave;
    this.onLoad = onLoad;
    this.active = false;
    this.loaded = false;
    this.playing = false;
    this.speed = 1;
    this.tickedAt = null; // performance.now() of the last step of the replay clock
    this.status = { state: "idle", text: "" };
    this.track = null; // {deviceId, tolerance, start, end, points: Float64Array | null, state}
    this._query = null; // the window loaded: {start, end, device}
    this._loading = null; // the AbortController of the load in flight
    this._trackLoading = null;

    this.form = root.querySelector(".history-query");
    this.deviceInput = this.form.elements.device;
    this.deviceList = root.querySelector("#history-devices");
    this.windowSelect = this.form.elements.preset;
    this.fromInput = this.form.elements.from;
    this.toInput = this.form.elements.to;
    this.playButton = root.querySelector('[data-action="play"]');
    this.slider = root.querySelector('input[name="time"]');
    this.timeOutput = root.querySelector(".history-time");
    this.speedSelect = root.querySelector('select[name="speed"]');
    this.statusLine = root.querySelector(".history-status");

    toggle.addEventListener("click", () => (this.active ? this.leave() : this.enter()));
    root.querySelector('[data-action="live"]').addEventListener("click", () => this.leave());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.load();
    });
    this.windowSelect.addEventListener("change", () => this._showCustom());
    this.playButton.addEventListener("click", () => this.togglePlay());
    this.slider.addEventListener("input", () => this.seek(Number(this.slider.value)));
    this.speedSelect.addEventListener("change", () => this.setSpeed(Number(this.speedSelect.value)));
  }

  enter() {
    if (this.active) return;
    this.active = true;
    this.root.hidden = false;
    this.toggleButton.setAttribute("aria-pressed", "true");
    document.body.dataset.mode = "history";
    this._fillDevices();
    this.onEnter();
    this.load();
  }

  /** Back to live: stops the replay and whatever is loading. */
  leave() {
    if (!this.active) return;
    this.pause();
    this._loading?.abort();
    this._trackLoading?.abort();
    this._loading = this._trackLoading = null;
    this.track = null;
    this.plane.track = null;
    this.active = false;
    this.root.hidden = true;
    this.toggleButton.setAttribute("aria-pressed", "false");
    delete document.body.dataset.mode;
    this.onLeave();
  }

  /** Loads the window the form asks for, every page of it, and goes to its start. */
  async load() {
    const query = this._formQuery();
    if (query === null) return;
    this._loading?.abort();
    const controller = new AbortController();
    this._loading = controller;
    this._trackLoading?.abort();
    this.pause();
    this.loaded = false;
    this.track = null;
    this.plane.track = null;
    this._setStatus("loading", "loading…");
    const filter = query.device ? `&devices=${encodeURIComponent(query.device)}` : "";
    const points = [];
    let span = null;
    let path = `/api/history?from=${query.start}&to=${query.end}&limit=${PAGE}${filter}`;
    let truncated = false;
    try {
      while (path !== null) {
        const page = await getHistory(path, controller.signal);
        if (controller.signal.aborted) return;
        if (!page.ok) {
          this._failed(page);
          return;
        }
        span ??= { start: page.body.from, end: page.body.to };
        for (const point of page.body.points) points.push(point);
        const next = page.body.next;
        if (next && points.length >= MAX_READINGS) truncated = true;
        path = next && !truncated ? `/api/history?cursor=${encodeURIComponent(next)}&limit=${PAGE}${filter}` : null;
        if (path !== null) this._setStatus("loading", `loading… ${points.length.toLocaleString()} readings`);
      }
    } catch (error) {
      if (error.name === "AbortError") return;
      throw error;
    } finally {
      if (this._loading === controller) this._loading = null;
    }
    this._query = { ...query, ...span };
    this.replay.load(points, span.start, span.end);
    // A window that begins before the first reading starts playing at that reading.
    if (this.replay.first !== null) this.replay.seek(this.replay.first);
    this.loaded = true;
    this.slider.min = String(span.start);
    this.slider.max = String(span.end);
    this.slider.disabled = false;
    this.playButton.disabled = false;
    this._showTime();
    const when = `${formatTime(span.start)} – ${formatTime(span.end)}`;
    const who = query.device || "the fleet";
    if (this.replay.readings === 0) {
      this._setStatus("empty", `No readings of ${who} from ${when}.`);
    } else {
      const devices = this.replay.devices.size;
      const text =
        `${this.replay.readings.toLocaleString()} readings of ` +
        `${devices === 1 ? "1 device" : `${devices} devices`}, ${when}` +
        (truncated
          ? ` (only the first ${MAX_READINGS.toLocaleString()}: choose a shorter window or one device)`
          : "");
      this._setStatus(truncated ? "truncated" : "loaded", text);
    }
    this.onLoad();
  }

  play() {
    if (!this.loaded || this.playing) return;
    if (this.replay.time >= this.replay.end) this.replay.seek(this.replay.start);
    this.playing = true;
    this.tickedAt = null;
    this._showPlaying();
  }

  pause() {
    if (!this.playing) return;
    this.playing = false;
    this._showPlaying();
  }

  togglePlay() {
    if (this.playing) this.pause();
    else this.play();
  }

  seek(time) {
    if (!this.loaded) return;
    this.replay.seek(time);
    this.tickedAt = null; // the clock restarts from here
    this._showTime();
  }

  setSpeed(speed) {
    this.speed = speed;
    this.tickedAt = null;
    if (this.speedSelect.value !== String(speed)) this.speedSelect.value = String(speed);
  }

  /** Advances the replay clock; called on every animation frame while history mode is on. */
  tick(nowMs) {
    if (!this.playing) return;
    if (this.tickedAt !== null) {
      const elapsed = Math.min(MAX_TICK_MS, nowMs - this.tickedAt);
      this.replay.seek(this.replay.time + (elapsed / 1000) * this.speed);
      this._showTime();
      if (this.replay.time >= this.replay.end) this.pause();
    }
    this.tickedAt = nowMs;
  }

  /** Refreshes what the panels show a few times a second: the selected device's track. */
  render() {
    if (!this.loaded) return;
    const id = this.selected();
    if (id === null || !this.replay.devices.has(id)) {
      if (this.track !== null) {
        this._trackLoading?.abort();
        this.track = null;
        this.plane.track = null;
        this.plane.invalid = true;
      }
      return;
    }
    const tolerance = trackTolerance(this.plane.scale);
    const track = this.track;
    if (track && track.deviceId === id && track.tolerance === tolerance) return;
    if (track?.state === "loading" && track.deviceId === id) return; // its answer comes first
    this._loadTrack(id, tolerance);
  }

  /** Read-only state for tests and measuring. */
  debug() {
    const track = this.track;
    let points = null;
    if (track?.points && track.points.length / 2 <= TRACK_POINTS_SHOWN) {
      points = [];
      for (let i = 0; i < track.points.length; i += 2) points.push([track.points[i], track.points[i + 1]]);
    }
    return {
      active: this.active,
      status: this.status.state,
      message: this.status.text,
      loaded: this.loaded,
      device: this._query?.device ?? null,
      from: this.loaded ? this.replay.start : null,
      to: this.loaded ? this.replay.end : null,
      time: this.loaded ? this.replay.time : null,
      tickedAt: this.tickedAt,
      playing: this.playing,
      speed: this.speed,
      readings: this.replay.readings,
      track: track && {
        deviceId: track.deviceId,
        tolerance: track.tolerance,
        state: track.state,
        count: track.points ? track.points.length / 2 : 0,
        points,
        drawn: this.plane.trackDrawn,
      },
    };
  }

  // -- internals --------------------------------------------------------------------------

  async _loadTrack(id, tolerance) {
    this._trackLoading?.abort();
    const controller = new AbortController();
    this._trackLoading = controller;
    const { start, end } = this._query;
    const track = { deviceId: id, tolerance, start, end, points: null, state: "loading" };
    this.track = track;
    const coordinates = [];
    let path =
      `/api/devices/${encodeURIComponent(id)}/history?from=${start}&to=${end}` +
      `&simplify=${tolerance}`;
    try {
      while (path !== null) {
        const page = await getHistory(path, controller.signal);
        if (controller.signal.aborted) return;
        if (!page.ok) {
          track.state = "failed";
          track.reason = page.reason;
          return;
        }
        for (const point of page.body.points) coordinates.push(point.x, point.y);
        const next = page.body.next;
        path = next
          ? `/api/devices/${encodeURIComponent(id)}/history?cursor=${encodeURIComponent(next)}&simplify=${tolerance}`
          : null;
      }
    } catch (error) {
      if (error.name === "AbortError") return;
      throw error;
    } finally {
      if (this._trackLoading === controller) this._trackLoading = null;
    }
    track.points = Float64Array.from(coordinates);
    track.state = "loaded";
    this.plane.track = { points: track.points, color: this.replay.devices.get(id)?.color ?? 0 };
    this.plane.invalid = true;
  }

  _formQuery() {
    const device = this.deviceInput.value.trim();
    const choice = this.windowSelect.value;
    if (choice !== "custom") {
      const end = this.live.serverNow();
      return { device, start: end - Number(choice), end };
    }
    const start = fromLocalInput(this.fromInput.value);
    const end = fromLocalInput(this.toInput.value);
    if (start === null || end === null) {
      this._setStatus("invalid", "Give both ends of the custom window.");
      return null;
    }
    if (start > end) {
      this._setStatus("invalid", "The window's start is after its end.");
      return null;
    }
    return { device, start, end };
  }

  _failed(page) {
    this.replay.clear();
    this.loaded = false;
    this.slider.disabled = true;
    this.playButton.disabled = true;
    if (page.status === 503) {
      this._setStatus("off", `History is off on this server: ${page.reason}.`);
    } else if (page.status === null) {
      this._setStatus("failed", `History could not be loaded: ${page.reason}.`);
    } else {
      this._setStatus("failed", `History could not be loaded: ${page.status} ${page.reason}.`);
    }
    this.onLoad();
  }

  _setStatus(state, text) {
    this.status = { state, text };
    this.statusLine.dataset.state = state;
    this.statusLine.textContent = text;
  }

  _showPlaying() {
    this.playButton.textContent = this.playing ? "❚❚" : "▶";
    this.playButton.setAttribute("aria-label", this.playing ? "Pause" : "Play");
  }

  _showTime() {
    const time = this.replay.time;
    this.slider.value = String(time);
    const text = formatTime(time);
    this.slider.setAttribute("aria-valuetext", text);
    if (this.timeOutput.textContent !== text) this.timeOutput.textContent = text;
  }

  _showCustom() {
    const custom = this.windowSelect.value === "custom";
    for (const label of this.root.querySelectorAll(".custom")) label.hidden = !custom;
    if (custom && !this.fromInput.value) {
      const end = this.loaded ? this.replay.end : this.live.serverNow();
      const start = this.loaded ? this.replay.start : end - 3600;
      this.fromInput.value = toLocalInput(start);
      this.toInput.value = toLocalInput(Math.ceil(end));
    }
  }

  _fillDevices() {
    const ids = new Set([...this.live.devices.keys(), ...this.replay.devices.keys()]);
    this.deviceList.replaceChildren(
      ...[...ids].sort(byId).map((id) => {
        const option = document.createElement("option");
        option.value = id;
        return option;
      }),
    );
  }
}

/** About one screen pixel in metres, as 1, 2 or 5 times a power of ten (at least 1 cm). */
export function trackTolerance(pixelsPerMetre) {
  const metres = 1 / pixelsPerMetre;
  const power = 10 ** Math.floor(Math.log10(metres));
  let step = power;
  for (const digit of [2, 5]) if (digit * power <= metres) step = digit * power;
  return Math.max(0.01, Number(step.toPrecision(1)));
}

/** Epoch seconds as a datetime-local input's value (local time, to the second). */
function toLocalInput(epochSeconds) {
  const date = new Date(epochSeconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
  );
}

/** A datetime-local input's value (local time) as epoch seconds, or null. */
function fromLocalInput(text) {
  const ms = text ? new Date(text).getTime() : NaN;
  return Number.isFinite(ms) ? ms / 1000 : null;
}
