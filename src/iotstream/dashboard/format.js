// How numbers, ages and field values read on the dashboard.

/** A grid or scale-bar value, with as many decimals as its `step` needs. */
export function formatMetres(value, step, withUnit = false) {
  if (withUnit && step < 1) return `${Math.round(value * 100)} cm`;
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  const text = (Math.abs(value) < step / 2 ? 0 : value).toFixed(decimals);
  return withUnit ? `${text} m` : text;
}

export function formatAge(seconds) {
  if (seconds === null) return "never";
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}

export function formatRate(rate) {
  return rate === null ? "– msg/s" : `${rate.toFixed(1)} msg/s`;
}

/** A reported field's value: numbers to a sensible precision, anything else as JSON. */
export function formatValue(value) {
  if (typeof value === "number") {
    return Number.isInteger(value) ? String(value) : String(Number(value.toFixed(3)));
  }
  return typeof value === "string" ? value : JSON.stringify(value);
}

/** An epoch-seconds time as local wall-clock time with milliseconds. */
export function formatTime(epochSeconds) {
  const date = new Date(epochSeconds * 1000);
  const ms = String(date.getMilliseconds()).padStart(3, "0");
  return `${date.toLocaleTimeString([], { hour12: false })}.${ms}`;
}

/** A duration in seconds: `42 s`, `4 min 10 s`, `2 h 05 min`. */
export function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return "–";
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const whole = Math.round(seconds);
  if (whole < 3600) {
    const s = whole % 60;
    return s === 0 ? `${Math.floor(whole / 60)} min` : `${Math.floor(whole / 60)} min ${s} s`;
  }
  const minutes = Math.round(seconds / 60);
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

/** A distance in metres: `0.42 m`, `12.3 m`, `1.52 km`. */
export function formatDistance(metres) {
  if (!Number.isFinite(metres)) return "–";
  if (metres < 10) return `${metres.toFixed(2)} m`;
  if (metres < 1000) return `${metres.toFixed(1)} m`;
  return `${(metres / 1000).toFixed(2)} km`;
}
