// The device list: searchable, and virtual. Only the rows in view exist in the DOM (a small
// pool, reused while scrolling), and they are refreshed a few times per second, not per message.
// A device keeps its row element while it stays in view, so hover, clicks and anything holding
// on to the row (a test, a screen reader) are not moved to another device by a refresh.

import { PALETTE } from "./colors.js";
import { formatAge, formatRate, formatValue } from "./format.js";

const ROW_HEIGHT = 44; // --row in style.css
const OVERSCAN = 4;
const byId = new Intl.Collator(undefined, { numeric: true }).compare; // robot2 before robot10

export class FleetList {
  /**
   * @param {HTMLElement} root the #fleet panel
   * @param {import("./fleet.js").Fleet} fleet
   * @param {{onSelect: (id: string) => void}} handlers
   */
  constructor(root, fleet, { onSelect }) {
    this.fleet = fleet;
    this.search = root.querySelector("input[type=search]");
    this.count = root.querySelector(".count");
    this.list = root.querySelector(".list");
    this.spacer = root.querySelector(".spacer");
    this.selected = null;
    this.invalid = true;
    this._rows = new Map(); // device id -> the row showing it
    this._spare = [];
    this._ids = [];
    this._sortedFor = -1;
    this._sorted = [];
    this._query = null;
    this._empty = document.createElement("p");
    this._empty.className = "empty";
    this.list.append(this._empty);
    this.search.addEventListener("input", () => (this.invalid = true));
    this.list.addEventListener("scroll", () => (this.invalid = true), { passive: true });
    this.list.addEventListener("click", (event) => {
      const row = event.target.closest(".device");
      if (row?.dataset.id) onSelect(row.dataset.id);
    });
  }

  select(id) {
    this.selected = id;
    this.invalid = true;
  }

  /** List another fleet (the live one or a replay). */
  setFleet(fleet) {
    this.fleet = fleet;
    this._sortedFor = -1;
    this.invalid = true;
  }

  /** Scrolls the list so the device's row is in view. */
  reveal(id) {
    this._filter();
    const index = this._ids.indexOf(id);
    if (index < 0) return;
    const top = index * ROW_HEIGHT;
    if (top < this.list.scrollTop || top + ROW_HEIGHT > this.list.scrollTop + this.list.clientHeight) {
      this.list.scrollTop = top - this.list.clientHeight / 2 + ROW_HEIGHT / 2;
    }
    this.invalid = true;
  }

  render() {
    this._filter();
    const ids = this._ids;
    const total = this.fleet.devices.size;
    const devices = total === 1 ? "1 device" : `${total} devices`;
    this.count.textContent = ids.length === total ? devices : `${ids.length} of ${total}`;
    this.spacer.style.height = `${ids.length * ROW_HEIGHT}px`;
    this._empty.hidden = ids.length > 0;
    this._empty.textContent = total === 0 ? "Waiting for devices…" : "No device matches.";

    const first = Math.max(0, Math.floor(this.list.scrollTop / ROW_HEIGHT) - OVERSCAN);
    const count = Math.ceil(this.list.clientHeight / ROW_HEIGHT) + 2 * OVERSCAN;
    const inView = ids.slice(first, first + count);
    const wanted = new Set(inView);
    for (const [id, row] of this._rows) {
      if (wanted.has(id)) continue;
      this._rows.delete(id);
      row.element.hidden = true;
      delete row.element.dataset.id; // a hidden row must not answer for a device
      this._spare.push(row);
    }
    inView.forEach((id, i) => {
      let row = this._rows.get(id);
      if (!row) {
        row = this._spare.pop() ?? this._newRow();
        row.element.hidden = false;
        this._rows.set(id, row);
      }
      this._fill(row, this.fleet.devices.get(id), first + i);
    });
    this.invalid = false;
  }

  _filter() {
    if (this._sortedFor !== this.fleet.membership) {
      this._sortedFor = this.fleet.membership;
      this._sorted = [...this.fleet.devices.keys()].sort(byId);
      this._query = null;
    }
    const query = this.search.value.trim().toLowerCase();
    if (query !== this._query) {
      this._query = query;
      this._ids = query ? this._sorted.filter((id) => id.toLowerCase().includes(query)) : this._sorted;
    }
  }

  _newRow() {
    const element = document.createElement("div");
    element.className = "device";
    element.setAttribute("role", "option");
    element.innerHTML =
      '<div class="line"><span class="dot"></span><span class="id"></span>' +
      '<span class="age"></span><span class="rate"></span></div>' +
      '<div class="line values"></div>';
    this.list.append(element);
    const [dot, id, age, rate] = element.firstChild.children;
    return { element, dot, id, age, rate, values: element.lastChild, text: {} };
  }

  _fill(row, device, index) {
    const stale = this.fleet.isStale(device);
    const values = device
      .fields()
      .map(([key, value]) => `${key} ${formatValue(value)}`)
      .join("  ");
    row.element.style.transform = `translateY(${index * ROW_HEIGHT}px)`;
    row.element.dataset.id = device.id;
    row.element.classList.toggle("stale", stale);
    row.element.setAttribute("aria-selected", String(device.id === this.selected));
    row.dot.style.background = PALETTE[device.color];
    // Writing unchanged text still costs a layout: only touch what changed.
    setText(row, "id", device.id);
    setText(row, "age", formatAge(this.fleet.ageSeconds(device)));
    setText(row, "rate", formatRate(device.rate));
    setText(row, "values", values);
    row.element.title = values;
  }
}

function setText(row, part, text) {
  if (row.text[part] !== text) {
    row.text[part] = text;
    row[part].textContent = text;
  }
}
