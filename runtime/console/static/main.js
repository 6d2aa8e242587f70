// The console page: loads the server's overview, then wires the task playground, the functions panel and the
// models table.

import { complete, errorText, getOverview } from "./api.js";
import { $, clear, el, pretty, svg } from "./dom.js";
import { followInvocations, showFunctions, wireInvokeForm } from "./functions.js";
import { showModels } from "./models.js";
import { drawAnswer, sizeOverlay } from "./overlay.js";
import { boxOf, imagePoint, locTokens } from "./regions.js";
import { snippets } from "./snippets.js";

const LOADING_POLL_MS = 2000;

const page = {
  tasks: new Map(), // tag -> {tag, input, text, parse_type}
  image: null, // {kind: "file", file, name, type} | {kind: "url", url}
  size: null, // [width, height] of the image as shown (EXIF orientation applied, as the server does)
  region: null, // [x1, y1, x2, y2] in image pixels
  snippets: [],
  snippetIndex: 0,
};

const form = $("#task-form");
const overlay = $("#overlay");
const preview = $("#preview");

function setStatus(text, state = "") {
  const status = $("#run-status");
  status.textContent = text;
  status.dataset.state = state;
}

async function refreshOverview() {
  let overview;
  try {
    overview = await getOverview();
  } catch (error) {
    $("#server-state").textContent = "server unreachable";
    $("#server-state").dataset.state = "failed";
    setTimeout(refreshOverview, LOADING_POLL_MS);
    return;
  }
  const state = $("#server-state");
  state.dataset.state = overview.state;
  state.textContent = overview.state_detail ? `${overview.state}: ${overview.state_detail}` : overview.state;
  showTaskControls(overview);
  showModels(overview);
  showFunctions(overview.functions);
  if (overview.state === "loading") setTimeout(refreshOverview, LOADING_POLL_MS);
}

function showTaskControls(overview) {
  const modelSelect = form.elements.model;
  const chosenModel = modelSelect.value;
  clear(modelSelect);
  const ids = overview.models.length
    ? overview.models.flatMap((model) => model.ids)
    : overview.configured_models.flatMap((model) => model.ids);
  for (const id of ids) modelSelect.append(el("option", { value: id, text: id }));
  if (ids.includes(chosenModel)) modelSelect.value = chosenModel;

  if (!page.tasks.size) {
    const taskSelect = form.elements.task;
    for (const task of overview.tasks) {
      page.tasks.set(task.tag, task);
      const kind = task.input === "none" ? "" : ` (${task.input})`;
      taskSelect.append(el("option", { value: task.tag, text: `${task.tag}${kind}` }));
    }
    taskSelect.value = page.tasks.has("<OD>") ? "<OD>" : taskSelect.value;
    showTaskInput();
  }
  const beams = form.elements.num_beams;
  const tokens = form.elements.max_tokens;
  beams.max = overview.limits.num_beams;
  tokens.max = overview.limits.max_tokens;
  if (!beams.value) beams.value = Math.min(3, overview.limits.num_beams);
  if (!tokens.value) tokens.value = Math.min(256, overview.limits.max_tokens);
}

function currentTask() {
  return page.tasks.get(form.elements.task.value);
}

function showTaskInput() {
  const task = currentTask();
  $("#text-input-field").hidden = !task || task.input !== "text";
  $("#region-field").hidden = !task || task.input !== "region";
  $("#stage").dataset.regionTask = String(Boolean(task && task.input === "region"));
}

// --- the image ---------------------------------------------------------------------------------------------------

function useFile(file) {
  if (!file) return;
  page.image = { kind: "file", file, name: file.name || "image.png", type: file.type || "image/png" };
  form.elements.image_url.value = "";
  showImage(URL.createObjectURL(file));
}

function useUrl(url) {
  if (!url) return;
  page.image = { kind: "url", url };
  form.elements.image.value = "";
  showImage(url);
}

function showImage(src) {
  page.size = null;
  page.region = null;
  clear($("#answer-shapes"));
  clear($("#selection"));
  $("#region-tokens").textContent = "drag a rectangle on the image";
  preview.src = src;
}

preview.addEventListener("load", () => {
  page.size = [preview.naturalWidth, preview.naturalHeight];
  sizeOverlay(overlay, ...page.size);
  $("#stage").dataset.empty = "false";
});
preview.addEventListener("error", () => {
  if (preview.getAttribute("src")) setStatus("the browser could not show this image", "error");
});

form.elements.image.addEventListener("change", () => useFile(form.elements.image.files[0]));
form.elements.image_url.addEventListener("change", () => useUrl(form.elements.image_url.value.trim()));
form.elements.task.addEventListener("change", showTaskInput);

for (const target of [$("#dropzone"), $("#stage")]) {
  target.addEventListener("dragover", (event) => {
    event.preventDefault();
    target.classList.add("dragging");
  });
  target.addEventListener("dragleave", () => target.classList.remove("dragging"));
  target.addEventListener("drop", (event) => {
    event.preventDefault();
    target.classList.remove("dragging");
    const file = [...event.dataTransfer.files].find((f) => f.type.startsWith("image/"));
    if (file) useFile(file);
    else useUrl(event.dataTransfer.getData("text/uri-list").split("\n")[0]);
  });
}

// An image pasted anywhere on the page (a screenshot in the clipboard) is used like a picked one.
document.addEventListener("paste", (event) => {
  const file = [...event.clipboardData.files].find((f) => f.type.startsWith("image/"));
  if (file) {
    event.preventDefault();
    useFile(file);
  }
});

// --- dragging a region -------------------------------------------------------------------------------------------

let dragStart = null;

overlay.addEventListener("pointerdown", (event) => {
  if (!page.size || event.button !== 0) return;
  event.preventDefault();
  overlay.setPointerCapture(event.pointerId);
  dragStart = imagePoint(event, overlay, ...page.size);
  drawSelection(boxOf(dragStart, dragStart));
});
overlay.addEventListener("pointermove", (event) => {
  if (dragStart) drawSelection(boxOf(dragStart, imagePoint(event, overlay, ...page.size)));
});
overlay.addEventListener("pointerup", (event) => {
  if (!dragStart) return;
  const box = boxOf(dragStart, imagePoint(event, overlay, ...page.size));
  dragStart = null;
  if (box[2] - box[0] < 2 || box[3] - box[1] < 2) {
    clear($("#selection"));
    return;
  }
  page.region = box;
  drawSelection(box);
  const tokens = locTokens(box, ...page.size);
  const output = $("#region-tokens");
  output.textContent = `${tokens}  (pixels ${box.join(", ")})`;
  output.dataset.tokens = tokens;
});

function drawSelection([x1, y1, x2, y2]) {
  clear($("#selection")).append(svg("rect", { class: "selection", x: x1, y: y1, width: x2 - x1, height: y2 - y1 }));
}

// --- running a task ----------------------------------------------------------------------------------------------

async function imageUrl() {
  if (page.image.kind === "url") return page.image.url;
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(page.image.file);
  });
}

function taskText(task) {
  if (task.input === "region") {
    if (!page.region) throw new Error(`${task.tag} needs a region: drag a rectangle on the image`);
    return task.tag + locTokens(page.region, ...page.size);
  }
  if (task.input === "text") {
    const text = form.elements.text_input.value.trim();
    if (!text) throw new Error(`${task.tag} needs text: type it in the Text field`);
    return task.tag + text;
  }
  return task.tag;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const task = currentTask();
  if (!page.image) return setStatus("pick, drop or paste an image first", "error");
  let text;
  try {
    text = taskText(task);
  } catch (error) {
    return setStatus(error.message, "error");
  }
  const request = {
    model: form.elements.model.value,
    text,
    image: page.image.kind === "file" ? { kind: "file", name: page.image.name, type: page.image.type } : page.image,
    max_tokens: Number(form.elements.max_tokens.value) || undefined,
    num_beams: Number(form.elements.num_beams.value) || undefined,
    stream: task.text,
  };
  const payload = {
    model: request.model,
    messages: [
      {
        role: "user",
        content: [
          { type: "image_url", image_url: { url: await imageUrl() } },
          { type: "text", text },
        ],
      },
    ],
    max_tokens: request.max_tokens,
    num_beams: request.num_beams,
  };
  if (task.text) Object.assign(payload, { stream: true, stream_options: { include_usage: true } });

  showSnippets(snippets(request, window.location.origin));
  clear($("#answer-shapes"));
  clear($("#answer-items"));
  $("#answer-text").textContent = "";
  $("#raw-json").textContent = "";
  setStatus(task.text ? "streaming…" : "running…", "running");
  $("#run").disabled = true;
  const started = performance.now();
  try {
    const answer = await complete(payload, {
      onDelta: (delta, content) => {
        $("#answer-text").textContent = content;
      },
    });
    const elapsed = Math.round(performance.now() - started);
    $("#raw-json").textContent = pretty(answer.body);
    if (!answer.ok) {
      setStatus(errorText(answer.status, answer.body), "error");
      return;
    }
    showAnswer(task, answer);
    setStatus(`${answer.status} in ${elapsed} ms · request id ${answer.requestId}`, "done");
  } catch (error) {
    setStatus(`the request failed: ${error.message}`, "error");
  } finally {
    $("#run").disabled = false;
  }
});

function showAnswer(task, answer) {
  if (answer.streamed) return; // the text is already there, token by token
  const body = answer.body;
  const parsed = body.result ? body.result[task.tag] : undefined;
  if (task.text || typeof parsed === "string") {
    $("#answer-text").textContent = typeof parsed === "string" ? parsed : body.choices[0].message.content;
    return;
  }
  const shapes = drawAnswer($("#answer-shapes"), parsed, page.size[0]);
  $("#answer-text").textContent = `${shapes.length} ${shapes.length === 1 ? "shape" : "shapes"}`;
  const items = $("#answer-items");
  for (const shape of shapes) {
    items.append(el("li", {}, el("strong", { text: shape.label || "(no label)" }), " ", el("code", { text: shape.coords.join(", ") })));
  }
}

// --- snippets ----------------------------------------------------------------------------------------------------

function showSnippets(list) {
  page.snippets = list;
  $("#snippets").hidden = false;
  const tabs = clear($("#snippets .tabs"));
  list.forEach((snippet, index) => {
    const tab = el("button", { type: "button", role: "tab", "data-snippet": snippet.name, text: snippet.name });
    tab.addEventListener("click", () => selectSnippet(index));
    tabs.append(tab);
  });
  selectSnippet(Math.min(page.snippetIndex, list.length - 1));
}

function selectSnippet(index) {
  page.snippetIndex = index;
  $("#snippet-code").textContent = page.snippets[index].code;
  $("#snippet-code").dataset.snippet = page.snippets[index].name;
  for (const [i, tab] of [...document.querySelectorAll("#snippets .tabs button")].entries()) {
    tab.setAttribute("aria-selected", String(i === index));
  }
}

$("#copy-snippet").addEventListener("click", async () => {
  const button = $("#copy-snippet");
  try {
    await navigator.clipboard.writeText($("#snippet-code").textContent);
    button.textContent = "Copied";
  } catch {
    window.getSelection().selectAllChildren($("#snippet-code"));
    button.textContent = "Selected: press Ctrl+C";
  }
  setTimeout(() => {
    button.textContent = "Copy";
  }, 1500);
});

wireInvokeForm();
followInvocations();
refreshOverview();
