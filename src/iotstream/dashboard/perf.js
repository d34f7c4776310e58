// Frame timing, for the debug hook: how often animation frames come and how long drawing takes.

const KEPT = 600; // about ten seconds at 60 fps

export class FrameStats {
  constructor() {
    this.reset();
    // Long tasks (> 50 ms on the main thread) are what a user feels as jank.
    if (PerformanceObserver.supportedEntryTypes?.includes("longtask")) {
      new PerformanceObserver((list) => {
        for (const entry of list.getEntries()) this.longTasks.push(entry.duration);
      }).observe({ type: "longtask" });
    }
  }

  reset() {
    this.frames = []; // [timestamp, draw ms or null when nothing needed drawing]
    this.longTasks = [];
  }

  record(timestamp, drawMs) {
    this.frames.push([timestamp, drawMs]);
    if (this.frames.length > KEPT) this.frames.shift();
  }

  summary() {
    const frames = this.frames;
    const span = frames.length > 1 ? frames[frames.length - 1][0] - frames[0][0] : 0;
    const intervals = frames.slice(1).map(([t], i) => t - frames[i][0]);
    return {
      frames: frames.length,
      fps: span > 0 ? ((frames.length - 1) * 1000) / span : 0,
      draws: frames.filter(([, ms]) => ms !== null).length,
      drawMs: percentiles(frames.map(([, ms]) => ms).filter((ms) => ms !== null)),
      frameIntervalMs: percentiles(intervals),
      longTasks: this.longTasks.length,
      longestTaskMs: Math.max(0, ...this.longTasks),
    };
  }
}

function percentiles(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
  return { p50: at(0.5), p95: at(0.95), max: at(1) };
}
