// The live dashboard: wires the stream, the fleet model and the views, and runs the one loop
// that draws. WebSocket frames only change the model; the plane is drawn on animation frames
// and the DOM panels are refreshed a few times per second, however fast frames arrive.
// In history mode the views show a replay instead of the live fleet, which keeps receiving
// frames, so going back to live shows the present at once.
// Analytics from the lake lie on the plane as layers: a heatmap, the selected robot's trips
// and stops, and ghost markers where moving robots are predicted to be.

import { DeviceAnalytics } from "./analytics.js";
import { CommandLog } from "./commands.js";
import { DeviceDetails } from "./details.js";
import { Fleet, GLIDE_MS } from "./fleet.js";
import { FleetList } from "./fleetlist.js";
import { FloorPlan } from "./floorplan.js";
import { HistoryMode } from "./history.js";
import { HeatmapLayer } from "./heatmap.js";
import { onSignIn, signOut, webSocketProtocols, whenSignedIn } from "./login.js";
import { FrameStats } from "./perf.js";
import { PipelineStatus } from "./pipeline.js";
import { Plane } from "./plane.js";
import { GhostLayer } from "./prediction.js";
import { ReplayFleet } from "./replay.js";
import { CoordinateStream } from "./stream.js";

const PANEL_REFRESH_MS = 250;
const IDLE_REDRAW_MS = 100; // trails fade and robots go stale even when nothing arrives

const fleet = new Fleet();
const commands = new CommandLog();
const replay = new ReplayFleet();
const frameStats = new FrameStats();
let selected = null;
let lastFrameAt = -Infinity;

const plane = new Plane(document.getElementById("plane"), fleet, {
  onSelect: (id) => select(id, true),
  onFollowChange: (following) => details.setFollowing(following),
});
const list = new FleetList(document.getElementById("fleet"), fleet, {
  onSelect: (id) => select(id, false),
});
const details = new DeviceDetails(document.getElementById("details"), fleet, {
  onClose: () => select(null),
  onFollow: (following) => plane.setFollowing(following),
  commands,
});
const pipeline = new PipelineStatus(document.getElementById("pipeline"), {
  onStats: (stats, atMs) => fleet.updateRates(stats.perDevice, atMs),
});
const floorPlan = new FloorPlan(
  document.getElementById("floorplan"),
  document.getElementById("floorplan-toggle"),
  (background) => {
    plane.background = background;
    plane.invalid = true;
  },
);
let liveView = null; // where the plane looked and what was selected before history mode
const historyMode = new HistoryMode(
  document.getElementById("history"),
  document.getElementById("history-toggle"),
  {
    replay,
    live: fleet,
    plane,
    selected: () => selected,
    onEnter: () => {
      liveView = { plane: plane.view(), selected, following: plane.following };
      showFleet(replay, null);
    },
    onLoad: () => {
      if (selected !== null && !replay.devices.has(selected)) select(null);
      plane.autoFit();
      list.invalid = true;
      details.invalid = true;
    },
    onLeave: () => {
      const view = liveView;
      liveView = null;
      showFleet(fleet, view.plane);
      select(fleet.devices.has(view.selected) ? view.selected : null);
      plane.setFollowing(selected !== null && view.following);
    },
  },
);
const heatmap = new HeatmapLayer(document.getElementById("heatmap"), document.getElementById("heatmap-toggle"), {
  plane,
  selected: () => selected,
  window: analysisWindow,
  history: () => historyMode.active,
});
const ghosts = new GhostLayer(document.getElementById("ghost-toggle"), { plane });
const analytics = new DeviceAnalytics(document.querySelector("#details .analysis"), {
  plane,
  window: () => analysisWindow("today"),
  history: () => historyMode.active,
  predicting: () => (ghosts.on && !historyMode.active ? ghosts.horizon : null),
});
plane.layers.floor.push(heatmap);
plane.layers.paths.push(analytics);
plane.layers.ahead.push(ghosts);

/**
 * The window analytics show: in history mode the loaded window (null while it loads), in live
 * mode today (since local midnight) or the last hour, up to the server's now.
 */
function analysisWindow(range) {
  if (historyMode.active) {
    return historyMode.loaded ? { start: replay.start, end: replay.end, label: "the history window" } : null;
  }
  const end = fleet.serverNow();
  if (range === "hour") return { start: end - 3600, end, label: "the last hour" };
  const midnight = new Date();
  midnight.setHours(0, 0, 0, 0);
  return { start: midnight.getTime() / 1000, end, label: "today" };
}

const connection = document.getElementById("connection");
const scheme = location.protocol === "https:" ? "wss" : "ws";
const stream = new CoordinateStream(`${scheme}://${location.host}/coordinates`, {
  onFrame: (frame) => {
    if (frame.type === "command") {
      commands.applyFrame(frame);
      return;
    }
    if (frame.type === "snapshot") commands.refresh();
    fleet.applyFrame(frame);
    lastFrameAt = performance.now();
    if (!historyMode.active && selected !== null && !fleet.devices.has(selected)) select(null);
  },
  onStatus: showConnection,
  protocols: webSocketProtocols,
  onExpired: () => signOut("Your session expired; log in again."),
});
onSignIn(() => stream.retryNow());

function select(id, reveal = false) {
  selected = id;
  plane.select(id);
  list.select(id);
  details.show(id);
  analytics.show(id);
  if (reveal && id !== null) list.reveal(id);
}

/** Puts the live fleet or the replay in the plane, the list and the details panel. */
function showFleet(model, view) {
  plane.setFleet(model, view);
  list.setFleet(model);
  details.setFleet(model);
}

function showConnection() {
  const { status, lastSeq, counts } = stream;
  let text = "connecting…";
  if (status === "live") {
    text = lastSeq === null ? "live" : `live · seq ${lastSeq}`;
  } else if (status === "reconnecting") {
    const seconds = Math.max(0, Math.ceil((stream.retryAt - Date.now()) / 1000));
    text = `disconnected · retrying in ${seconds} s`;
  }
  connection.dataset.state = status;
  if (connection.textContent !== text) connection.textContent = text;
  connection.title =
    `${counts.connects} connections, ${counts.frames} frames, ` +
    `${counts.snapshots} snapshots, ${counts.gaps} gaps resynced`;
}

let lastDraw = -Infinity;
let drawnChange = -1;
let lastPanels = -Infinity;

function animate(now) {
  requestAnimationFrame(animate);
  const replaying = historyMode.active;
  if (replaying) historyMode.tick(now);
  const model = replaying ? replay : fleet;
  const needsDraw =
    plane.invalid ||
    model.changed !== drawnChange ||
    (!replaying && now - lastFrameAt < GLIDE_MS) || // markers are still gliding
    now - lastDraw >= IDLE_REDRAW_MS;
  let drawMs = null;
  if (needsDraw) {
    const started = performance.now();
    drawnChange = model.changed;
    plane.draw(now);
    lastDraw = now;
    drawMs = performance.now() - started;
  }
  frameStats.record(now, drawMs);
  if (list.invalid || details.invalid || analytics.invalid || now - lastPanels >= PANEL_REFRESH_MS) {
    lastPanels = now;
    list.render();
    details.render();
    heatmap.tick(now);
    analytics.tick(now);
    analytics.render();
    if (replaying) historyMode.render();
    if (stream.status === "live") showConnection();
  }
}

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !(event.target instanceof HTMLInputElement)) select(null);
  // Space plays and pauses a replay, except where it types or presses the focused control.
  if (event.key === " " && historyMode.active && !typesOrPresses(event.target)) {
    event.preventDefault();
    historyMode.togglePlay();
  }
});

function typesOrPresses(target) {
  if (target instanceof HTMLInputElement) return target.type !== "range";
  return (
    target instanceof HTMLButtonElement ||
    target instanceof HTMLSelectElement ||
    target instanceof HTMLTextAreaElement ||
    (target instanceof HTMLElement && target.isContentEditable)
  );
}
for (const button of document.querySelectorAll("[data-zoom]")) {
  const actions = { in: () => plane.zoom(1.5), out: () => plane.zoom(1 / 1.5), fit: () => plane.fit() };
  button.addEventListener("click", actions[button.dataset.zoom]);
}

// Read-only views of the dashboard for tests and for measuring, plus two ways to break the
// connection on purpose (as a network would) to watch it recover.
window.iotstream = Object.freeze({
  state: () => ({
    mode: historyMode.active ? "history" : "live",
    connection: stream.status,
    lastSeq: stream.lastSeq,
    counts: { ...stream.counts },
    recentFrames: stream.recent.map((frame) => ({ ...frame })),
    selected,
    following: plane.following,
    view: { center: [...plane.center], scale: plane.scale, width: plane.width, height: plane.height },
    background: plane.background ? { url: plane.background.url, rect: plane.backgroundRect() } : null,
    history: historyMode.debug(),
    analytics: { heatmap: heatmap.debug(), device: analytics.debug(), ghosts: ghosts.debug() },
    // The devices the plane shows: the live fleet, or in history mode the replay.
    devices: [...plane.fleet.devices.values()].map((device) => ({
      id: device.id,
      x: device.state.x,
      y: device.state.y,
      heading: device.state.heading,
      screen: device.screen ? [device.screen[0], device.screen[1]] : null,
      visible: Boolean(
        device.screen &&
          device.screen[0] >= 0 &&
          device.screen[1] >= 0 &&
          device.screen[0] <= plane.width &&
          device.screen[1] <= plane.height,
      ),
      stale: plane.fleet.isStale(device),
      ageSeconds: plane.fleet.ageSeconds(device),
      rate: device.rate,
      fields: { ...device.state },
      // A replayed trail is history: its points, to compare with what was published.
      trail: plane.fleet === replay ? trailPoints(device) : null,
    })),
  }),
  perf: () => frameStats.summary(),
  resetPerf: () => frameStats.reset(),
  dropConnection: (holdMs = 0) => stream.drop(holdMs),
  loseFrames: (count = 1, type = null) => stream.loseFrames(count, type),
});

function trailPoints(device) {
  const points = [];
  device.trail.forEach((t, x, y) => points.push([x, y]));
  return points;
}

floorPlan.start();
requestAnimationFrame(animate);
// With auth on, the data waits for a login; with auth off this resolves at once.
whenSignedIn().then(() => {
  pipeline.start();
  stream.start();
});
