// The answer drawn on the image: an SVG whose viewBox is the image's own pixels, so every shape is placed at the
// coordinates the API returned, whatever size the image is shown at.

import { clear, svg } from "./dom.js";

const COLOURS = 8;

export function sizeOverlay(overlay, width, height) {
  overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
  overlay.setAttribute("preserveAspectRatio", "none");
  overlay.dataset.width = String(width);
  overlay.dataset.height = String(height);
}

// The shapes of a parsed answer ({"bboxes", "labels"}, {"polygons", ...}, {"quad_boxes", ...}), drawn into
// `group`; returns them as a list for the page to describe.
export function drawAnswer(group, answer, width) {
  clear(group);
  const shapes = shapesOf(answer);
  const fontSize = Math.max(10, Math.round(width / 40));
  shapes.forEach((shape, index) => {
    const colour = `colour-${index % COLOURS}`;
    if (shape.kind === "box") {
      const [x1, y1, x2, y2] = shape.coords;
      group.append(
        svg("rect", {
          class: `shape ${colour}`,
          x: x1,
          y: y1,
          width: x2 - x1,
          height: y2 - y1,
          "data-label": shape.label,
          "data-index": index,
        }),
      );
      if (shape.label) group.append(labelText(shape.label, x1, y1, fontSize, colour));
    } else {
      const points = [];
      for (let i = 0; i + 1 < shape.coords.length; i += 2) points.push(`${shape.coords[i]},${shape.coords[i + 1]}`);
      group.append(
        svg("polygon", {
          class: `shape ${shape.kind} ${colour}`,
          points: points.join(" "),
          "data-label": shape.label,
          "data-index": index,
        }),
      );
      if (shape.label) group.append(labelText(shape.label, shape.coords[0], shape.coords[1], fontSize, colour));
    }
  });
  return shapes;
}

function labelText(label, x, y, fontSize, colour) {
  const above = y - fontSize * 0.3 > fontSize;
  return svg("text", {
    class: `label ${colour}`,
    x: x + 2,
    y: above ? y - fontSize * 0.3 : y + fontSize,
    "font-size": fontSize,
    text: label,
  });
}

export function shapesOf(answer) {
  if (!answer || typeof answer !== "object") return [];
  const shapes = [];
  const boxLabels = answer.bboxes_labels ?? answer.labels ?? [];
  for (const [i, box] of (answer.bboxes ?? []).entries()) {
    shapes.push({ kind: "box", coords: box, label: text(boxLabels[i]) });
  }
  const polygonLabels = answer.polygons_labels ?? answer.labels ?? [];
  for (const [i, polygons] of (answer.polygons ?? []).entries()) {
    for (const polygon of polygons) shapes.push({ kind: "polygon", coords: polygon, label: text(polygonLabels[i]) });
  }
  for (const [i, quad] of (answer.quad_boxes ?? []).entries()) {
    shapes.push({ kind: "quad", coords: quad, label: text((answer.labels ?? [])[i]) });
  }
  return shapes;
}

function text(value) {
  return value === undefined || value === null ? "" : String(value).trim();
}
