// The Functions panel: the loaded functions and their routes, a form to invoke one, and the last invocations of
// each (status, duration, request id, the log lines of that request), live from the server's event stream.

import { $, clear, el } from "./dom.js";

const KEEP_PER_FUNCTION = 20;

export function showFunctions(functions) {
  const list = $("#function-list");
  const select = $("#invoke-form select[name=function]");
  const chosen = select.value;
  clear(list);
  clear(select);
  if (!functions.length) list.append(el("li", { class: "empty", text: "No function in the functions folder." }));
  for (const fn of functions) {
    const tryIt = el("button", { type: "button", class: "link", text: "invoke" });
    tryIt.addEventListener("click", () => {
      select.value = fn.name;
      $("#invoke-form input[name=path]").focus();
    });
    list.append(
      el("li", { "data-function": fn.name }, el("strong", { text: fn.name }), " ", ...routes(fn.routes), " ", tryIt),
    );
    select.append(el("option", { value: fn.name, text: fn.name }));
  }
  if (functions.some((fn) => fn.name === chosen)) select.value = chosen;
}

function routes(paths) {
  return paths.flatMap((path, i) => (i ? [" ", el("code", { text: path })] : [el("code", { text: path })]));
}

function targetOf(form) {
  const name = form.elements.function.value;
  let path = form.elements.path.value.trim() || "/";
  if (!path.startsWith("/")) path = `/${path}`;
  const query = form.elements.query.value.trim().replace(/^\?/, "");
  return `/${encodeURIComponent(name)}${path === "/" ? "" : path}${query ? `?${query}` : ""}`;
}

function bodyOf(form, method) {
  if (method === "GET" || method === "HEAD") return {};
  const file = form.elements.upload.files[0];
  if (file) return { body: file, headers: { "Content-Type": file.type || "application/octet-stream" } };
  const text = form.elements.body.value;
  if (!text) return {};
  let type = "text/plain";
  try {
    JSON.parse(text);
    type = "application/json";
  } catch {
    // sent as text
  }
  return { body: text, headers: { "Content-Type": type } };
}

export function wireInvokeForm() {
  const form = $("#invoke-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!form.elements.function.value) return;
    const method = form.elements.method.value;
    const target = targetOf(form);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    const started = performance.now();
    try {
      const response = await fetch(target, { method, ...bodyOf(form, method) });
      const elapsed = performance.now() - started;
      await showInvokeResult(response, `${method} ${target}`, elapsed);
    } catch (error) {
      $("#invoke-result").hidden = false;
      $("#invoke-status").textContent = "failed";
      $("#invoke-body").textContent = String(error);
    } finally {
      button.disabled = false;
    }
  });
}

async function showInvokeResult(response, what, elapsed) {
  const result = $("#invoke-result");
  result.hidden = false;
  result.dataset.status = String(response.status);
  result.dataset.requestId = response.headers.get("X-Request-Id") || "";
  $("#invoke-status").textContent = `${response.status} ${response.statusText}`;
  $("#invoke-meta").textContent =
    `${what} · ${Math.round(elapsed)} ms · request id ${response.headers.get("X-Request-Id") || "-"}`;
  const body = $("#invoke-body");
  clear(body);
  const type = response.headers.get("Content-Type") || "";
  if (type.startsWith("image/")) {
    body.append(el("img", { src: URL.createObjectURL(await response.blob()), alt: "the function's image answer" }));
    return;
  }
  const text = await response.text();
  try {
    body.textContent = JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    body.textContent = text;
  }
}

// Invocations arrive from the server as server-sent events; EventSource reconnects by itself, resuming after
// the last id it saw.
export function followInvocations() {
  const events = new EventSource("api/invocations");
  events.addEventListener("invocation", (event) => addInvocation(JSON.parse(event.data)));
  return events;
}

function groupOf(name) {
  const panel = $("#invocations");
  panel.querySelector(".empty")?.remove();
  let group = panel.querySelector(`section[data-function="${CSS.escape(name)}"]`);
  if (!group) {
    group = el("section", { class: "invocation-group", "data-function": name }, el("h4", { text: `/${name}` }));
    panel.append(group);
  }
  return group;
}

function addInvocation(record) {
  const group = groupOf(record.function);
  const ok = record.status < 400;
  const when = new Date(record.started_at * 1000).toLocaleTimeString();
  const logs = el("pre", { class: "logs" });
  for (const line of record.logs) {
    logs.append(el("span", { class: `log level-${line.level.toLowerCase()}`, text: `${line.level} ${line.logger}: ${line.message}\n` }));
  }
  if (!record.logs.length) logs.append(el("span", { class: "log level-none", text: "no log lines" }));
  const item = el(
    "article",
    {
      class: `invocation ${ok ? "ok" : "failed"}`,
      "data-request-id": record.request_id,
      "data-status": record.status,
      "data-seq": record.seq,
    },
    el(
      "p",
      {},
      el("span", { class: "status-code", text: record.status }),
      " ",
      el("code", { text: `${record.method} ${record.path}${record.query ? `?${record.query}` : ""}` }),
      " ",
      el("span", { class: "duration", text: `${record.duration_ms} ms` }),
      " ",
      el("span", { class: "when", text: when }),
      " ",
      el("span", { class: "request-id", text: `request id ${record.request_id}` }),
    ),
    logs,
  );
  group.querySelector("h4").after(item);
  const items = group.querySelectorAll("article.invocation");
  for (let i = KEEP_PER_FUNCTION; i < items.length; i += 1) items[i].remove();
}
