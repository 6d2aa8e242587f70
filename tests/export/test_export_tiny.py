"""``export.tiny``: random-weight checkpoints whose greedy output depends on image and prompt, reproducibly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file

from export.tiny import build_checkpoint


def _generate(model: Any, processor: Any, image: Image.Image, task: str) -> list[int]:
    inputs = processor(text=[task], images=[image], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, num_beams=1, do_sample=False, max_new_tokens=12)
    return out[0].tolist()


def test_outputs_vary_with_image_and_prompt(tiny_model: Any, tiny_processor: Any) -> None:
    images = [Image.new("RGB", (64, 48), (230, 30, 30)), Image.linear_gradient("L").convert("RGB")]
    outputs = {
        (i, t): _generate(tiny_model, tiny_processor, im, t)
        for i, im in enumerate(images)
        for t in ("<OD>", "<CAPTION>")
    }
    eos = tiny_model.generation_config.eos_token_id
    for sequence in outputs.values():
        assert sequence[2] != eos and len(sequence) > 4  # start, forced BOS, then real tokens
    assert outputs[(0, "<OD>")] != outputs[(1, "<OD>")]  # the image matters
    assert outputs[(0, "<OD>")] != outputs[(0, "<CAPTION>")]  # the prompt matters
    assert len({tuple(s) for s in outputs.values()}) == 4


def test_same_seed_same_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> None:
    again = build_checkpoint(tmp_path / "again", arch="tiny", seed=0)
    other = build_checkpoint(tmp_path / "other", arch="tiny", seed=1)
    reference = load_file(str(tiny_checkpoint / "model.safetensors"))
    same = load_file(str(again / "model.safetensors"))
    different = load_file(str(other / "model.safetensors"))
    assert reference.keys() == same.keys()
    assert all(torch.equal(reference[k], same[k]) for k in reference)
    assert (tiny_checkpoint / "tokenizer.json").read_text() == (again / "tokenizer.json").read_text()
    assert any(not torch.equal(reference[k], different[k]) for k in reference if k in different)
