"""What transformers.js reads from a model folder besides the graphs, written into its config files.

- ``preprocessor_config.json``: ``task_prompts_without_inputs``, ``task_prompts_with_input`` and
  ``tasks_answer_post_processing_type``. transformers.js's Florence2Processor builds prompts and picks parsers from
  these keys only; without them it feeds ``<OD>`` to the model as raw characters and parses every answer as text.
  They come from the runtime's task table (runtime/florence2/tasks.py), the one place the prompts are written.
- ``config.json``: ``"transformers.js_config": {"use_external_data_format": {file: 1, ...}}`` naming every graph
  file with an ``_data`` side file; in the browser transformers.js fetches side files only for the files named
  there (Node's ONNX Runtime finds them by itself).

transformers (Python) ignores both keys. Written after the graphs, so the side files are known; rewritten when a
variant is added.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime.florence2.tasks import TASKS, InputKind

JS_CONFIG_KEY = "transformers.js_config"


def task_keys() -> dict[str, dict[str, str]]:
    """The three processor keys, as Microsoft's remote-code processor defines them."""
    without_inputs = {tag: task.prompt for tag, task in TASKS.items() if task.input_kind is InputKind.NONE}
    with_input = {tag: task.prompt for tag, task in TASKS.items() if task.input_kind is not InputKind.NONE}
    return {
        "task_prompts_without_inputs": without_inputs,
        "task_prompts_with_input": with_input,
        "tasks_answer_post_processing_type": {tag: task.parse_type.value for tag, task in TASKS.items()},
    }


def external_data_files(onnx_dir: Path) -> dict[str, int]:
    """``{graph file: 1}`` for each graph file with one side file (``<file>_data``)."""
    return {p.name: 1 for p in sorted(onnx_dir.glob("*.onnx")) if p.with_name(p.name + "_data").is_file()}


def write_transformers_js_keys(model_dir: Path) -> None:
    _update(model_dir / "preprocessor_config.json", task_keys())
    js_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get(JS_CONFIG_KEY) or {}
    js_config = {**js_config, "use_external_data_format": external_data_files(model_dir / "onnx")}
    _update(model_dir / "config.json", {JS_CONFIG_KEY: js_config})


def _update(path: Path, keys: dict[str, Any]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(keys)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
