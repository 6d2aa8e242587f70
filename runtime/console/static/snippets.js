// The request the page just sent, as code to copy: curl, the OpenAI Python SDK, and an edge function's AI.run.

// request: {model, text, image: {kind: "file", name, type} | {kind: "url", url}, max_tokens, num_beams, stream}
export function snippets(request, origin) {
  return [
    { name: "curl", code: curlSnippet(request, origin) },
    { name: "OpenAI SDK", code: openaiSnippet(request, origin) },
    { name: "AI.run", code: aiRunSnippet(request) },
  ];
}

function options(request) {
  const out = {};
  if (request.max_tokens) out.max_tokens = request.max_tokens;
  if (request.num_beams) out.num_beams = request.num_beams;
  return out;
}

function shellQuote(value) {
  return `'${String(value).replaceAll("'", `'\\''`)}'`;
}

function curlSnippet(request, origin) {
  const url = request.image.kind === "file" ? "__IMAGE__" : request.image.url;
  const body = {
    model: request.model,
    messages: [
      {
        role: "user",
        content: [
          { type: "image_url", image_url: { url } },
          { type: "text", text: request.text },
        ],
      },
    ],
    ...options(request),
  };
  if (request.stream) body.stream = true;
  const json = JSON.stringify(body, null, 2);
  const target = `${origin}/v1/chat/completions`;
  const stream = request.stream ? " -N" : "";
  if (request.image.kind !== "file") {
    return `curl -s${stream} ${target} -H 'Content-Type: application/json' -d ${shellQuote(json)}`;
  }
  // A data: URL is too long for an argument list; printf is a shell builtin, so it is not bound by one. The JSON is
  // its format, with the image as its one argument.
  const format = json.replaceAll("\\", "\\\\").replaceAll("%", "%%").replace('"__IMAGE__"', '"%s"');
  return [
    `IMAGE="data:${request.image.type || "image/png"};base64,$(base64 -w0 ${shellQuote(request.image.name)})"`,
    `printf ${shellQuote(format)} "$IMAGE" |`,
    `  curl -s${stream} ${target} -H 'Content-Type: application/json' --data-binary @-`,
].join("\n");
}

function py(value) {
  return JSON.stringify(value); // a JSON string is a valid Python string literal
}

function openaiSnippet(request, origin) {
  const lines = ["from openai import OpenAI", ""];
  if (request.image.kind === "file") {
    lines.unshift("import base64");
    lines.push(
      `with open(${py(request.image.name)}, "rb") as f:`,
      `    image_url = ${py(`data:${request.image.type || "image/png"};base64,`)} + base64.b64encode(f.read()).decode()`,
    );
  } else {
    lines.push(`image_url = ${py(request.image.url)}`);
  }
  const extra = request.num_beams ? `\n    extra_body={"num_beams": ${request.num_beams}},` : "";
  const maxTokens = request.max_tokens ? `\n    max_tokens=${request.max_tokens},` : "";
  lines.push(
    `client = OpenAI(base_url=${py(`${origin}/v1`)}, api_key="unused")`,
    "completion = client.chat.completions.create(",
    `    model=${py(request.model)},`,
    "    messages=[{",
    '        "role": "user",',
    "        \"content\": [",
    '            {"type": "image_url", "image_url": {"url": image_url}},',
    `            {"type": "text", "text": ${py(request.text)}},`,
    "        ],",
    `    }],${maxTokens}${extra}`,
    ")",
    "print(completion.choices[0].message.content)",
    'print(completion.model_extra["result"])  # the parsed answer, coordinates in pixels',
  );
  return lines.join("\n");
}

function aiRunSnippet(request) {
  const image =
    request.image.kind === "file"
      ? "await image_url_of(request)  # the POSTed image bytes, or ?url="
      : py(request.image.url);
  const opts = Object.entries(options(request))
    .map(([key, value]) => `, ${py(key)}: ${value}`)
    .join("");
  return [
    "# functions/try_it.py  ->  /try_it",
    "from runtime.functions.helpers import chat, image_url_of",
    "",
    "",
    "async def fetch(request, env, ctx):",
    `    image = ${image}`,
    `    answer = await AI.run(${py(request.model)}, {"messages": chat(image, ${py(request.text)})${opts}})`,
    '    return answer["result"]',
  ].join("\n");
}
