// The live dashboard: wires the stream, the fleet model and the views, and runs the one loop
// that draws. WebSocket frames only change the model; the plane is drawn on animation frames
// and the DOM panels are refreshed a few times per second, however fast frames arrive.

import { DeviceDetails } from "./details.js";
import { Fleet, GLIDE_MS } from "./fleet.js";
import { FleetList } from "./fleetlist.js";
import { FloorPlan } from "./floorplan.js";
import { FrameStats } from "./perf.js";
import { PipelineStatus } from "./pipeline.js";
import { Plane } from "./plane.js";
import { CoordinateStream } from "./stream.js";

const PANEL_REFRESH_MS = 250;
const IDLE_REDRAW_MS = 100; // trails fade and robots go stale even when nothing arrives

const fleet = new Fleet();
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
const connection = document.getElementById("connection");
const scheme = location.protocol === "https:" ? "wss" : "ws";
const stream = new CoordinateStream(`${scheme}://${location.host}/coordinates`, {
  onFrame: (frame) => {
    fleet.applyFrame(frame);
    lastFrameAt = performance.now();
    if (selected !== null && !fleet.devices.has(selected)) select(null);
  },
  onStatus: showConnection,
});

function select(id, reveal = false) {
  selected = id;
  plane.select(id);
  list.select(id);
  details.show(id);
  if (reveal && id !== null) list.reveal(id);
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
  const needsDraw =
    plane.invalid ||
    fleet.changed !== drawnChange ||
    now - lastFrameAt < GLIDE_MS || // markers are still gliding
    now - lastDraw >= IDLE_REDRAW_MS;
  let drawMs = null;
  if (needsDraw) {
    const started = performance.now();
    drawnChange = fleet.changed;
    plane.draw(now);
    lastDraw = now;
    drawMs = performance.now() - started;
  }
  frameStats.record(now, drawMs);
  if (list.invalid || details.invalid || now - lastPanels >= PANEL_REFRESH_MS) {
    lastPanels = now;
    list.render();
    details.render();
    if (stream.status === "live") showConnection();
  }
}

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !(event.target instanceof HTMLInputElement)) select(null);
});
for (const button of document.querySelectorAll("[data-zoom]")) {
  const actions = { in: () => plane.zoom(1.5), out: () => plane.zoom(1 / 1.5), fit: () => plane.fit() };
  button.addEventListener("click", actions[button.dataset.zoom]);
}

// Read-only views of the dashboard for tests and for measuring, plus two ways to break the
// connection on purpose (as a network would) to watch it recover.
window.iotstream = Object.freeze({
  state: () => ({
    connection: stream.status,
    lastSeq: stream.lastSeq,
    counts: { ...stream.counts },
    recentFrames: stream.recent.map((frame) => ({ ...frame })),
    selected,
    following: plane.following,
    view: { center: [...plane.center], scale: plane.scale, width: plane.width, height: plane.height },
    background: plane.background ? { url: plane.background.url, rect: plane.backgroundRect() } : null,
    devices: [...fleet.devices.values()].map((device) => ({
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
      stale: fleet.isStale(device),
      ageSeconds: fleet.ageSeconds(device),
      rate: device.rate,
      fields: { ...device.state },
    })),
  }),
  perf: () => frameStats.summary(),
  resetPerf: () => frameStats.reset(),
  dropConnection: (holdMs = 0) => stream.drop(holdMs),
  loseFrames: (count = 1) => stream.loseFrames(count),
});

floorPlan.start();
pipeline.start();
stream.start();
requestAnimationFrame(animate);
