// Tracked commands, live: the dashboard sends them with POST /api/devices/{id}/commands, and
// every `command` frame of the WebSocket moves the ones it names, so a row goes
// queued → sent → delivered → succeeded (or failed, rejected, expired, canceled) as it happens.

import { authFetch } from "./login.js";

/** States after which nothing more happens to a command. */
export const END_STATES = new Set(["succeeded", "failed", "rejected", "expired", "canceled"]);
/** States in which an operator may still cancel it. */
export const CANCELABLE = new Set(["queued", "sent"]);

export class CommandLog {
  constructor() {
    /** @type {Map<string, object>} command id -> its newest state, as the API shows it */
    this.commands = new Map();
    this._listeners = new Set();
  }

  /** Call `listener(command)` on every move of a command; returns the unsubscribe. */
  listen(listener) {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }

  /** A `command` frame from the WebSocket. */
  applyFrame(frame) {
    for (const command of frame.commands ?? []) this._learn(command);
  }

  get(id) {
    return this.commands.get(id);
  }

  /** Ask the API again for every command not in an end state: after a resync, the frames that
   * moved them may be lost (a snapshot holds the devices, not the commands). One closed when
   * its TTL passed while sent or delivered may still get its result. */
  async refresh() {
    const open = [...this.commands.values()].filter((command) => !END_STATES.has(command.status));
    await Promise.all(
      open.map(async (command) => {
        try {
          const response = await authFetch(`/api/commands/${encodeURIComponent(command.id)}`);
          if (response.ok) this._learn(await response.json());
        } catch {
          // unreachable now: the next resync asks again
        }
      }),
    );
  }

  /**
   * Send `text` ("goto 3.5 2.0": a command word, then its args) to a device.
   * @returns {Promise<{ok: true, command: object} | {ok: false, reason: string}>}
   */
  async send(deviceId, text) {
    const [command, ...args] = text.trim().split(/\s+/);
    let response;
    try {
      response = await authFetch(`/api/devices/${encodeURIComponent(deviceId)}/commands`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(args.length ? { command, args } : { command }),
      });
    } catch (error) {
      return { ok: false, reason: `server unreachable (${error.message})` };
    }
    const body = await response.json().catch(() => null);
    if (!response.ok) return { ok: false, reason: `${response.status}: ${reason(body) ?? response.statusText}` };
    return { ok: true, command: this._learn(body) };
  }

  /** DELETE /api/commands/{id}; the frame that follows shows it canceled. */
  async cancel(id) {
    try {
      const response = await authFetch(`/api/commands/${encodeURIComponent(id)}`, { method: "DELETE" });
      const body = await response.json().catch(() => null);
      if (response.ok) this._learn(body);
      return response.ok ? { ok: true } : { ok: false, reason: reason(body) ?? response.statusText };
    } catch (error) {
      return { ok: false, reason: `server unreachable (${error.message})` };
    }
  }

  /** Keep the newest state: a frame may overtake the answer to the POST, and vice versa. */
  _learn(command) {
    const known = this.commands.get(command.id);
    const newer =
      !known ||
      command.transitions.length > known.transitions.length ||
      (command.transitions.length === known.transitions.length && command.closed && !known.closed);
    if (!newer) return known;
    this.commands.set(command.id, command);
    for (const listener of this._listeners) listener(command);
    return command;
  }
}

/** A short line saying how a command stands: its reason and message, or its result. */
export function describeCommand(command) {
  const parts = [];
  if (command.attempts > 1) parts.push(`sent ${command.attempts} times`);
  if (command.delivery === "unconfirmed") parts.push("delivery unconfirmed");
  if (command.closed && command.message) parts.push(command.message);
  if (command.result !== null && command.result !== undefined) {
    parts.push(`result ${JSON.stringify(command.result)}`);
  }
  if (!command.closed && command.status === "queued") parts.push("waiting for the robot to come online");
  return parts.join(" · ");
}

function reason(body) {
  const detail = body?.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((problem) => problem.msg ?? JSON.stringify(problem)).join("; ");
  return null;
}
