// The server's HTTP API as the page uses it: the console's own endpoints and the OpenAI-compatible completions.

export const COMPLETIONS_URL = "/v1/chat/completions";

export async function getOverview() {
  const response = await fetch("api/overview", { cache: "no-store" });
  if (!response.ok) throw new Error(`the console overview answered ${response.status}`);
  return response.json();
}

// The message of an error envelope ({"error": {"message", "code", ...}}), or the raw text.
export function errorText(status, body) {
  const error = body && typeof body === "object" ? body.error : null;
  if (error && error.message) return `${status} ${error.code}: ${error.message}`;
  return `${status}: ${typeof body === "string" ? body : JSON.stringify(body)}`;
}

async function bodyOf(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

// One completion. Streamed requests call onDelta(text) per chunk and resolve to an assembled summary.
export async function complete(payload, { onDelta } = {}) {
  const response = await fetch(COMPLETIONS_URL, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
  const requestId = response.headers.get("X-Request-Id");
  if (!response.ok || !payload.stream) {
    const body = await bodyOf(response);
    return { ok: response.ok, status: response.status, requestId, body };
  }
  return readStream(response, requestId, onDelta || (() => {}));
}

async function readStream(response, requestId, onDelta) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const chunks = [];
  let content = "";
  let buffer = "";
  let error = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (!data || data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) {
        error = chunk;
        continue;
      }
      chunks.push(chunk);
      const delta = chunk.choices?.[0]?.delta?.content;
      if (delta) {
        content += delta;
        onDelta(delta, content);
      }
    }
  }
  const last = chunks.filter((chunk) => chunk.choices?.length).at(-1);
  const usage = chunks.find((chunk) => chunk.usage)?.usage;
  const body = error || {
    id: chunks[0]?.id,
    object: `chat.completion, assembled from ${chunks.length} chat.completion.chunk events`,
    model: chunks[0]?.model,
    content,
    finish_reason: last?.choices?.[0]?.finish_reason ?? null,
    usage: usage ?? null,
  };
  return { ok: !error, status: response.status, requestId, body, streamed: true };
}
