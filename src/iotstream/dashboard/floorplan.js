// An optional floor plan under the plane: an image placed by its origin and resolution.
//
// Settings come from the URL (`?image=/plans/floor.png&origin=-5,-3&scale=0.05&opacity=0.5`,
// so a link can be shared) or else from what this browser last applied (localStorage). As
// in a ROS map, `origin` is where the image's bottom-left corner lies on the plane, in
// metres, and `scale` is metres per pixel.

const STORAGE_KEY = "iotstream.floorplan";
const DEFAULTS = { image: "", originX: 0, originY: 0, scale: 0.05, opacity: 0.5 };

export class FloorPlan {
  /**
   * @param {HTMLFormElement} form the settings panel
   * @param {HTMLButtonElement} toggle the button that shows it
   * @param {(background: object | null) => void} onChange
   */
  constructor(form, toggle, onChange) {
    this.form = form;
    this.onChange = onChange;
    this.status = form.querySelector(".floorplan-status");
    this.settings = { ...DEFAULTS };
    this._loading = 0;
    toggle.addEventListener("click", () => (form.hidden = !form.hidden));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.apply(this._read(), true);
    });
    form.querySelector('[data-action="clear"]').addEventListener("click", () => {
      this.apply({ ...DEFAULTS }, true);
    });
  }

  start() {
    this.apply(fromUrl() ?? fromStorage() ?? { ...DEFAULTS }, false);
  }

  /** Shows `settings`; `remember` saves them for this browser and puts them in the URL. */
  apply(settings, remember) {
    this.settings = settings;
    this._write(settings);
    if (remember) {
      localStorage.setItem(STORAGE_KEY, JSON.stringify(settings));
      history.replaceState(null, "", toUrl(settings));
    }
    if (!settings.image) {
      this.status.textContent = "";
      this.onChange(null);
      return;
    }
    const loading = ++this._loading;
    const image = new Image();
    this.status.textContent = "loading…";
    image.onload = () => {
      if (loading !== this._loading) return; // a newer image was applied meanwhile
      this.status.textContent = `${image.naturalWidth} × ${image.naturalHeight} px`;
      this.onChange({ ...settings, image, url: settings.image });
    };
    image.onerror = () => {
      if (loading !== this._loading) return;
      this.status.textContent = "the image could not be loaded";
      this.onChange(null);
    };
    image.src = settings.image;
  }

  _read() {
    const value = (name) => this.form.elements[name].value.trim();
    const number = (name) => {
      const parsed = Number.parseFloat(value(name));
      return Number.isFinite(parsed) ? parsed : DEFAULTS[name];
    };
    return {
      image: value("image"),
      originX: number("originX"),
      originY: number("originY"),
      scale: number("scale") > 0 ? number("scale") : DEFAULTS.scale,
      opacity: Math.min(1, Math.max(0, number("opacity"))),
    };
  }

  _write(settings) {
    for (const [name, value] of Object.entries(settings)) this.form.elements[name].value = value;
  }
}

function fromUrl() {
  const params = new URLSearchParams(location.search);
  if (!params.has("image")) return null;
  const [originX, originY] = (params.get("origin") ?? "0,0").split(",").map(Number);
  const scale = Number(params.get("scale") ?? DEFAULTS.scale);
  const opacity = Number(params.get("opacity") ?? DEFAULTS.opacity);
  return {
    image: params.get("image"),
    originX: Number.isFinite(originX) ? originX : 0,
    originY: Number.isFinite(originY) ? originY : 0,
    scale: scale > 0 ? scale : DEFAULTS.scale,
    opacity: Number.isFinite(opacity) ? Math.min(1, Math.max(0, opacity)) : DEFAULTS.opacity,
  };
}

function fromStorage() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORAGE_KEY));
    return saved?.image ? { ...DEFAULTS, ...saved } : null;
  } catch {
    return null; // unreadable: start without a plan
  }
}

function toUrl(settings) {
  const url = new URL(location.href);
  for (const name of ["image", "origin", "scale", "opacity"]) url.searchParams.delete(name);
  if (settings.image) {
    url.searchParams.set("image", settings.image);
    url.searchParams.set("origin", `${settings.originX},${settings.originY}`);
    url.searchParams.set("scale", String(settings.scale));
    url.searchParams.set("opacity", String(settings.opacity));
  }
  return url;
}
