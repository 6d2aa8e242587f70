// Runs @huggingface/transformers (Node, offline) on an exported model folder for the Python test
// tests/export/test_export_transformers_js.py: usage `node run.mjs request.json`, answer as JSON on stdout.
// The pixel values come from the request (ours); transformers.js builds the prompts itself from the folder.
import { readFileSync } from 'node:fs';
import { env, AutoProcessor, Florence2ForConditionalGeneration, Tensor } from '@huggingface/transformers';

const request = JSON.parse(readFileSync(process.argv[2], 'utf8'));
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = '';
env.useFSCache = false;

const processor = await AutoProcessor.from_pretrained(request.model_dir);
const model = await Florence2ForConditionalGeneration.from_pretrained(request.model_dir, {
  dtype: request.dtype,
  device: 'cpu',
});

const answers = [];
for (const c of request.cases) {
  const buffer = readFileSync(c.pixel_values_file);
  const pixels = new Float32Array(buffer.buffer, buffer.byteOffset, buffer.byteLength / 4);
  const pixel_values = new Tensor('float32', Float32Array.from(pixels), c.dims);
  const prompts = processor.construct_prompts(c.text);
  const text_inputs = processor.tokenizer(prompts);
  const generated = await model.generate({
    ...text_inputs,
    pixel_values,
    max_new_tokens: request.max_new_tokens,
    num_beams: 1,
    do_sample: false,
  });
  const text = processor.batch_decode(generated, { skip_special_tokens: false })[0];
  const [width, height] = c.image_size;
  let parsed;
  try {
    parsed = processor.post_process_generation(text, c.task, [width, height]);
  } catch (error) {
    parsed = { error: String(error) }; // transformers.js parses no polygons
  }
  answers.push({
    prompt: prompts[0],
    prompt_ids: Array.from(text_inputs.input_ids.data, Number),
    generated_ids: Array.from(generated.data, Number),
    text,
    parsed,
  });
}
// Given texts, parsed by transformers.js's post-processing alone.
const parsed_texts = (request.texts ?? []).map((t) =>
  processor.post_process_generation(t.text, t.task, t.image_size),
);
process.stdout.write(JSON.stringify({ answers, parsed_texts, dtype: request.dtype }));
