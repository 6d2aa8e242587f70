"""Our exported folder in transformers.js (@huggingface/transformers in Node, offline) equals our engine.

transformers.js gets our pixel values (it resizes with sharp, not Pillow) and builds its prompts from the folder's
preprocessor_config.json; its prompt ids and greedy token ids must equal the engine's (fp32, q8 and q4 files), its
answers must come from the parser the task names, and on well-formed answers its parsed results must equal ours
(boxes within the one pixel between its float64 and transformers' float32 arithmetic; pure text without the special
tokens it keeps). The negative control strips the keys the export writes for it: transformers.js then feeds
``<OD>`` as characters and parses everything as text.

The Node project is tests/export/transformersjs (``ONNXRUNTIME_NODE_INSTALL=skip npm ci`` there; .ci/run does it).
Without node or its node_modules the test is skipped, unless FLORENCE_REQUIRE_NODE=1 (CI) makes that a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from export.transformers_js import JS_CONFIG_KEY, task_keys
from runtime.engine import EngineSettings, TaskRequest, load
from runtime.engine.model import Florence2Engine
from runtime.florence2 import TASKS
from runtime.model_folder import SUFFIXES, decoder_part_files

pytestmark = pytest.mark.slow  # Node runs transformers.js on the exported folder and on quantized variants

NODE_PROJECT = Path(__file__).parent / "transformersjs"
MAX_NEW_TOKENS = 12
PROMPTS = [
    "<OD>",
    "<CAPTION>",
    "<OCR_WITH_REGION>",
    "<REGION_TO_CATEGORY><loc_100><loc_200><loc_300><loc_400>",
    "<CAPTION_TO_PHRASE_GROUNDING>a green car",
    "<REFERRING_EXPRESSION_SEGMENTATION>the door",
]
CAR = "<loc_52><loc_333><loc_932><loc_774>"
DOOR = "<loc_100><loc_20><loc_300><loc_600>"
QUAD = "".join(f"<loc_{v}>" for v in (10, 20, 110, 20, 110, 60, 10, 60))
WELL_FORMED = [
    ("</s><s>A green car parked in front of a yellow building.</s>", "<CAPTION>", (640, 480)),
    ("</s><s>CUDA FOR ENGINEERS</s>", "<OCR>", (640, 480)),
    (f"</s><s>car{CAR}door{DOOR}wheel{CAR}{DOOR}</s>", "<OD>", (640, 480)),
    (f"</s><s>turquoise Volkswagen Beetle{CAR}wooden door{DOOR}</s>", "<DENSE_REGION_CAPTION>", (1280, 960)),
    (f"</s><s>{CAR}{DOOR}</s>", "<REGION_PROPOSAL>", (333, 222)),
    (f"</s><s>CUDA{QUAD}FOR ENGINEERS{QUAD}</s>", "<OCR_WITH_REGION>", (1000, 500)),
    ("<s>a<loc_312><loc_312><loc_312><loc_312></s>", "<OD>", (144, 144)),
]
# transformers.js's answer shapes per post-processing type (it parses no polygons).
JS_SHAPES = {"pure_text": str, "ocr": "quad_boxes", "bboxes": "bboxes", "description_with_bboxes": "bboxes"}


def node_or_skip() -> str:
    node = shutil.which("node")
    if node and (NODE_PROJECT / "node_modules" / "@huggingface" / "transformers").is_dir():
        return node
    why = f"node or {NODE_PROJECT}/node_modules is missing (ONNXRUNTIME_NODE_INSTALL=skip npm ci there)"
    if os.environ.get("FLORENCE_REQUIRE_NODE") == "1":
        pytest.fail(why)
    pytest.skip(why)


def images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    return [Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)) for w, h in ((80, 60), (50, 90))]


def split(prompt: str) -> tuple[str, str | None]:
    tag = prompt[: prompt.index(">") + 1]
    return tag, prompt[len(tag) :] or None


def run_transformers_js(
    node: str, model_dir: Path, engine: Florence2Engine, work: Path, dtype: str = "fp32", texts: list[Any] = ()
) -> dict[str, Any]:
    """transformers.js's answers to every image x prompt, and its parse of ``texts`` ((text, task, size) each)."""
    cases = []
    for i, image in enumerate(images()):
        pixels = engine.processor.preprocess([image]).astype(np.float32)
        path = work / f"pixels-{i}.bin"
        pixels.tofile(path)
        for prompt in PROMPTS:
            tag, _ = split(prompt)
            cases.append(
                {"text": prompt, "task": tag, "pixel_values_file": str(path), "dims": list(pixels.shape)}
                | {"image_size": list(image.size)}
            )
    request = work / "request.json"
    parse = [{"text": text, "task": task, "image_size": list(size)} for text, task, size in texts]
    request.write_text(json.dumps({"model_dir": str(model_dir), "dtype": dtype, "max_new_tokens": MAX_NEW_TOKENS,
                                   "cases": cases, "texts": parse}))  # fmt: skip
    done = subprocess.run(
        [node, "run.mjs", str(request)], cwd=NODE_PROJECT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[Florence2Engine]:
    engine = load(tiny_model_dir, EngineSettings(warmup=False))
    yield engine
    asyncio.run(engine.close())


def engine_answers(engine: Florence2Engine) -> list[Any]:
    requests = [
        TaskRequest(image=image, task=tag, text_input=text, max_new_tokens=MAX_NEW_TOKENS, num_beams=1)
        for image in images()
        for tag, text in map(split, PROMPTS)
    ]
    return [asyncio.run(engine.run(r)) for r in requests]


def test_the_export_writes_what_transformers_js_reads(tiny_model_dir: Path) -> None:
    preprocessor = json.loads((tiny_model_dir / "preprocessor_config.json").read_text())
    for key, value in task_keys().items():
        assert preprocessor[key] == value
    assert preprocessor["task_prompts_without_inputs"]["<OD>"] == "Locate the objects with category name in the image."
    assert preprocessor["task_prompts_with_input"]["<CAPTION_TO_PHRASE_GROUNDING>"].endswith("{input}")
    external = json.loads((tiny_model_dir / "config.json").read_text())[JS_CONFIG_KEY]["use_external_data_format"]
    # every graph transformers.js reads keeps its weights in a side file of its own name; the decoder's two parts
    # (for OpenVINO) read the merged decoder's, and transformers.js loads the merged decoder where there is one
    parts = {name for dtype in SUFFIXES for name in decoder_part_files(dtype)}
    graphs = sorted(p.name for p in (tiny_model_dir / "onnx").glob("*.onnx") if p.name not in parts)
    assert sorted(external) == graphs and graphs


def test_transformers_js_generates_what_the_engine_generates(
    tiny_model_dir: Path, engine: Florence2Engine, tmp_path: Path
) -> None:
    node = node_or_skip()
    answers = run_transformers_js(node, tiny_model_dir, engine, tmp_path, texts=WELL_FORMED)
    same_answers(engine, answers["answers"])
    # The random model's answers are rarely well formed; on well-formed ones the parsers agree, transformers.js in
    # float64 pixels where transformers (and so the engine) truncates float32 ones.
    for (text, task, size), theirs in zip(WELL_FORMED, answers["parsed_texts"], strict=True):
        ours = engine.processor.post_process(text, task, size)[task]
        theirs = theirs[task]
        if isinstance(ours, str):
            assert theirs.strip() == ours, text
            continue
        key = "quad_boxes" if "quad_boxes" in ours else "bboxes"
        assert theirs["labels"] == ours["labels"], text
        js_pixels = [[int(v) for v in box] for box in theirs[key]]
        assert len(js_pixels) == len(ours[key]) > 0, text
        for js_box, box in zip(js_pixels, ours[key], strict=True):
            assert all(abs(a - b) <= 1 for a, b in zip(js_box, box, strict=True)), (text, js_box, box)


@pytest.fixture(scope="module")
def quantized_model_dir(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported with the files of transformers.js's q8 (``_quantized``) and q4 (``_q4``, q4 brings
    int8 along); their conversions are validated by tests/export/test_export_variants.py."""
    from export.exporter import export_model

    out = tmp_path_factory.mktemp("quantized") / "model"
    export_model(str(tiny_checkpoint), out, dtypes=("fp32", "q8", "q4"), validate=False)
    return out


@pytest.mark.parametrize(("dtype", "suffix"), [("q8", "_quantized"), ("q4", "_q4")])
def test_quantized_files_load_in_transformers_js_and_the_engine(
    quantized_model_dir: Path, tmp_path: Path, dtype: str, suffix: str
) -> None:
    """transformers.js asks for the dtype's file of all four graphs (q8 is its WebAssembly default)."""
    graphs = ("vision_encoder", "embed_tokens", "encoder_model", "decoder_model_merged")
    record = json.loads((quantized_model_dir / "export.json").read_text())
    assert record["graphs"][dtype] == {g: f"onnx/{g}{suffix}.onnx" for g in graphs}
    external = json.loads((quantized_model_dir / "config.json").read_text())[JS_CONFIG_KEY]["use_external_data_format"]
    assert {f"{g}{suffix}.onnx" for g in graphs} <= set(external)
    engine = load(quantized_model_dir, EngineSettings(variant=dtype, warmup=False))
    try:
        assert dict(engine.info.graph_variants) == dict.fromkeys(graphs, dtype)
        node = node_or_skip()
        same_answers(engine, run_transformers_js(node, quantized_model_dir, engine, tmp_path, dtype=dtype)["answers"])
    finally:
        asyncio.run(engine.close())


def same_answers(engine: Florence2Engine, theirs: list[dict[str, Any]]) -> None:
    ours = engine_answers(engine)
    for case, (js, result) in enumerate(zip(theirs, ours, strict=True)):
        tag, text = split(PROMPTS[case % len(PROMPTS)])
        label = f"{PROMPTS[case % len(PROMPTS)]} (image {case // len(PROMPTS)})"
        assert js["prompt_ids"] == engine.processor.prompt_ids(tag, text), label
        assert js["generated_ids"][1:] == list(result.token_ids), label  # after the decoder start token
        answer = js["parsed"].get(tag)
        shape = JS_SHAPES.get(TASKS[tag].parse_type.value)
        if shape is str:
            # transformers.js keeps the special tokens; ours is the clean text of the same ids.
            clean = engine.processor.tokenizer.decode(js["generated_ids"], skip_special_tokens=True).strip()
            assert isinstance(answer, str) and clean == result.parsed[tag], label
        elif shape is not None:
            assert shape in answer, label


def test_without_the_keys_transformers_js_reads_tags_as_text(
    tiny_model_dir: Path, engine: Florence2Engine, tmp_path: Path
) -> None:
    """Negative control: the folder as exported before, without the processor keys."""
    node = node_or_skip()
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder, symlinks=True)
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    for key in task_keys():
        del preprocessor[key]
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    theirs = run_transformers_js(node, folder, engine, tmp_path)["answers"]
    assert theirs[0]["prompt"] == "<OD>"
    assert theirs[0]["prompt_ids"] != engine.processor.prompt_ids("<OD>", None)
    assert isinstance(theirs[0]["parsed"]["<OD>"], str)
