// Regions as Florence-2 takes them: four location tokens, each a bin of 1000 along its axis.

const BINS = 1000;

// The server's quantization (runtime.florence2.coordinates.quantize): floor(v / (size / 1000)) in float32,
// clamped to 0..999. Math.fround keeps each step in float32, as numpy's float32 arithmetic does.
export function quantize(value, size) {
  const scale = Math.fround(size / BINS);
  const bin = Math.floor(Math.fround(Math.fround(value) / scale));
  return Math.min(BINS - 1, Math.max(0, bin));
}

export function locTokens([x1, y1, x2, y2], width, height) {
  return [quantize(x1, width), quantize(y1, height), quantize(x2, width), quantize(y2, height)]
    .map((bin) => `<loc_${bin}>`)
    .join("");
}

// A pointer position over the overlay, in pixels of the image itself (the overlay may be shown scaled).
export function imagePoint(event, overlay, width, height) {
  const box = overlay.getBoundingClientRect();
  const x = ((event.clientX - box.left) * width) / box.width;
  const y = ((event.clientY - box.top) * height) / box.height;
  return [clamp(Math.round(x), 0, width), clamp(Math.round(y), 0, height)];
}

// Two corners, in any order, as [x1, y1, x2, y2].
export function boxOf([ax, ay], [bx, by]) {
  return [Math.min(ax, bx), Math.min(ay, by), Math.max(ax, bx), Math.max(ay, by)];
}

function clamp(value, low, high) {
  return Math.min(high, Math.max(low, value));
}
