// The selected device: every field it reported, and commands to it with their states, live.

import { CANCELABLE, describeCommand } from "./commands.js";
import { formatAge, formatRate, formatTime, formatValue } from "./format.js";

const RESULTS_KEPT = 6;

export class DeviceDetails {
  /**
   * @param {HTMLElement} root the #details panel
   * @param {import("./fleet.js").Fleet} fleet
   * @param {{onClose: () => void, onFollow: (following: boolean) => void,
   *   commands: import("./commands.js").CommandLog}} handlers
   */
  constructor(root, fleet, { onClose, onFollow, commands }) {
    this.root = root;
    this.fleet = fleet;
    this.commands = commands;
    commands.listen((command) => this._showCommand(command));
    this.id = null;
    this.invalid = false;
    this.title = root.querySelector('[data-field="id"]');
    this.age = root.querySelector('[data-field="age"]');
    this.fields = root.querySelector(".fields");
    this.follow = root.querySelector('[data-action="follow"]');
    this.results = root.querySelector(".results");
    this._rendered = "";
    root.querySelector('[data-action="close"]').addEventListener("click", onClose);
    this.follow.addEventListener("click", () => {
      onFollow(this.follow.getAttribute("aria-pressed") !== "true");
    });
    for (const button of root.querySelectorAll("[data-command]")) {
      button.addEventListener("click", () => this._send(button.dataset.command));
    }
    const custom = root.querySelector(".custom-command");
    custom.addEventListener("submit", (event) => {
      event.preventDefault();
      const command = custom.elements.command.value;
      if (!command) return;
      this._send(command);
      custom.elements.command.value = "";
    });
  }

  show(id) {
    this.id = id;
    this.root.hidden = id === null;
    this._rendered = "";
    this.invalid = true;
  }

  /** Show the device in another fleet (the live one or a replay). */
  setFleet(fleet) {
    this.fleet = fleet;
    this._rendered = "";
    this.invalid = true;
  }

  setFollowing(following) {
    this.follow.setAttribute("aria-pressed", String(following));
  }

  render() {
    this.invalid = false;
    const device = this.id === null ? undefined : this.fleet.devices.get(this.id);
    if (!device) return;
    this.title.textContent = device.id;
    this.root.classList.toggle("stale", this.fleet.isStale(device));
    const age = formatAge(this.fleet.ageSeconds(device));
    this.age.textContent = `seen ${age} ago · ${formatRate(device.rate)}`;
    const { timestamp, receivedAt } = device.state;
    const rows = [
      ...device.fields().map(([key, value]) => [key, formatValue(value)]),
      ...(timestamp === undefined ? [] : [["timestamp", formatTime(timestamp)]]),
      ...(receivedAt === undefined ? [] : [["received", formatTime(receivedAt)]]),
    ];
    // Rebuild only when something shown changed: the panel re-renders a few times a second.
    const key = JSON.stringify(rows);
    if (key === this._rendered) return;
    this._rendered = key;
    this.fields.replaceChildren(
      ...rows.flatMap(([name, value]) => {
        const term = document.createElement("dt");
        term.textContent = name;
        const definition = document.createElement("dd");
        definition.textContent = value;
        definition.dataset.field = name;
        return [term, definition];
      }),
    );
  }

  async _send(text) {
    const deviceId = this.id;
    const item = document.createElement("li");
    item.innerHTML =
      '<span class="status"></span><span class="what"></span><span class="info"></span>' +
      '<button type="button" class="cancel" hidden>cancel</button>';
    const [status, what, info, cancel] = item.children;
    what.textContent = `${text} → ${deviceId}`;
    // data-status: what became of the request; data-state: the command's state since.
    const show = (state, line) => {
      item.dataset.status = state;
      status.textContent = state;
      info.textContent = line;
    };
    show("sending", "");
    this.results.prepend(item);
    while (this.results.children.length > RESULTS_KEPT) this.results.lastChild.remove();
    const result = await this.commands.send(deviceId, text);
    if (!result.ok) {
      show("failed", result.reason);
      return;
    }
    item.dataset.status = "accepted";
    item.dataset.commandId = result.command.id;
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      const canceled = await this.commands.cancel(result.command.id);
      if (!canceled.ok) info.textContent = `not canceled: ${canceled.reason}`;
    });
    this._showCommand(this.commands.get(result.command.id) ?? result.command);
  }

  /** Bring the row of a command sent from here up to its newest state. */
  _showCommand(command) {
    const item = [...this.results.children].find((li) => li.dataset.commandId === command.id);
    if (!item) return;
    const [status, , info, cancel] = item.children;
    item.dataset.state = command.status;
    status.textContent = command.status;
    info.textContent = describeCommand(command) || `id ${command.id}`;
    info.title = `id ${command.id}, published to orin/${command.deviceId}/command`;
    cancel.hidden = !CANCELABLE.has(command.status) || command.closed;
  }
}
