// The pipeline's health: GET /api/stats and /api/health, polled, one request of each at a time.

import { getJson } from "./api.js";

const POLL_MS = 1500;

export class PipelineStatus {
  /**
   * @param {HTMLElement} root the #pipeline panel
   * @param {{onStats: (stats: object, atMs: number) => void}} handlers
   */
  constructor(root, { onStats }) {
    this.onStats = onStats;
    this.metrics = Object.fromEntries(
      [...root.querySelectorAll("[data-metric]")].map((element) => [element.dataset.metric, element]),
    );
    this.components = root.querySelector(".components");
    this.note = root.querySelector(".pipeline-note");
    this.stats = null;
    this.health = null;
  }

  start() {
    const poll = async () => {
      const [stats, health] = await Promise.all([getJson("/api/stats"), getJson("/api/health")]);
      this.stats = stats.ok ? stats.body : null;
      this.health = health.body;
      if (this.stats) this.onStats(this.stats, performance.now());
      this._render(stats.reason ?? health.reason);
      setTimeout(poll, POLL_MS);
    };
    poll();
  }

  _render(failure) {
    const { stats, health } = this;
    const set = (name, text, alert = false) => {
      this.metrics[name].textContent = text;
      this.metrics[name].classList.toggle("alert", alert);
    };
    set("rate", stats ? formatCount(stats.rates.messagesPerSecond) : "–");
    set("devices", stats ? formatCount(stats.devices) : "–");
    set("clients", stats ? formatCount(stats.websocketClients) : "–");
    set("rejected", stats ? formatCount(stats.rejected) : "–", stats?.rejected > 0);
    this.metrics.rate.title = stats ? `${stats.rates.messagesPerSecond10s} msg/s over 10 s` : "";

    const components = Object.entries(health?.components ?? {});
    this.components.replaceChildren(
      ...components.map(([name, { status, detail }]) => {
        const item = document.createElement("li");
        item.textContent = name;
        item.dataset.status = status;
        item.title = `${status}: ${detail}`;
        return item;
      }),
    );

    const down = health?.status === "DOWN";
    this.note.classList.toggle("alert", Boolean(failure) || down);
    if (failure) this.note.textContent = `API unreachable: ${failure}`;
    else if (down) this.note.textContent = downSummary(components);
    else this.note.textContent = stats ? summary(stats) : "";
  }
}

function summary(stats) {
  const parts = [
    plural(stats.framesSent, "frame"),
    plural(stats.commandsSent, "command"),
    `up ${formatUptime(stats.uptimeSeconds)}`,
  ];
  const reasons = Object.entries(stats.rejectedReasons);
  if (reasons.length) parts.push(`rejected: ${reasons.map(([r, n]) => `${r} ${n}`).join(", ")}`);
  return parts.join(" · ");
}

function downSummary(components) {
  const down = components.filter(([, { status }]) => status !== "UP");
  return down.map(([name, { detail }]) => `${name}: ${detail}`).join(" · ");
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

function formatCount(value) {
  if (value >= 10_000) return `${(value / 1000).toFixed(0)}k`;
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

function formatUptime(seconds) {
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}
