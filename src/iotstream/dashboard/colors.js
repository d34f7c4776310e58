// A small fixed palette: the plane batches its drawing per colour, so few colours keep it fast.

export const PALETTE = [
  "#38bdf8", "#f472b6", "#a3e635", "#fb923c", "#c084fc", "#2dd4bf", "#facc15", "#f87171",
];
export const STALE_COLOR = "#56657f";
export const SELECTED_COLOR = "#ffffff";

/** A stable palette index for a device id (FNV-1a), so a robot keeps its colour across reloads. */
export function colorIndex(id) {
  let hash = 0x811c9dc5;
  for (let i = 0; i < id.length; i += 1) {
    hash = Math.imul(hash ^ id.charCodeAt(i), 0x01000193);
  }
  return (hash >>> 0) % PALETTE.length;
}
