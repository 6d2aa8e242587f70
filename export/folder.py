"""The model folder on disk: preparing it, the Hugging Face files beside the graphs, sizes and free space."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from export.errors import InsufficientDiskSpace, NotAFlorence2Checkpoint, OutputNotEmpty

# Files the runtime reads besides the graphs (the model-folder contract of ARCHITECTURE.md).
HF_FILES: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)

# Bytes per parameter of each variant; fp16 and int8 keep some tensors wider (norms, biases, scales).
# q4: the decoder (about a third of the parameters) at ~0.6 bytes each with scales, the other graphs copied from int8.
_BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.2, "int8": 1.3, "q8": 1.3, "q4": 1.1}
_SLACK_BYTES = 64 * 2**20


def check_output(out: Path, force: bool) -> None:
    """A folder with files in it is only replaced when ``force`` is set."""
    if out.exists() and not out.is_dir():
        raise OutputNotEmpty(f"{out} exists and is a file; choose a folder path for --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputNotEmpty(f"{out} is not empty; choose an empty folder or pass --force to replace its content")
    if force and out.is_dir() and _precious(out):
        raise OutputNotEmpty(f"refusing to empty {out} (a repository, home, or the working folder); choose a subfolder")


def _precious(out: Path) -> bool:
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    return (resolved / ".git").exists() or resolved in (cwd, *cwd.parents, Path.home().resolve())


def prepare_output(out: Path, force: bool) -> None:
    """Create ``out``, emptied first when ``force`` allows it."""
    check_output(out, force)
    if out.is_dir():
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)


def estimate_bytes(n_params: int, decoder_params: int, dtypes: tuple[str, ...]) -> int:
    """Disk needed: every variant, the unmerged decoders that exist until the merge, and some slack."""
    variants = sum(_BYTES_PER_PARAM[d] for d in dtypes) * n_params
    unmerged_decoders = 2 * 4 * decoder_params
    return int(variants + unmerged_decoders + _SLACK_BYTES)


def check_free_space(out: Path, needed: int) -> None:
    probe = out
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise InsufficientDiskSpace(
            f"the export needs about {needed / 2**30:.2f} GiB but {probe} has {free / 2**30:.2f} GiB free; "
            "free some space, export fewer --dtype variants or choose another --out"
        )


def write_hf_files(checkpoint: Path, out: Path) -> None:
    """Write config, generation config, tokenizer and processor files as the runtime expects them.

    The processor is saved through transformers so that a checkpoint shipping only ``vocab.json``/``merges.txt``
    still yields ``tokenizer.json``, and ``processor_config.json`` carries ``post_processor_config``.
    """
    from transformers import AutoProcessor, GenerationConfig

    from export.generation_config import complete, missing_ids

    try:
        processor = AutoProcessor.from_pretrained(checkpoint)
    except Exception as exc:
        raise NotAFlorence2Checkpoint(f"cannot load the processor of {checkpoint}: {exc}") from exc
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        processor.save_pretrained(staging)
        text_config = _text_config(checkpoint)
        try:
            generation = complete(GenerationConfig.from_pretrained(checkpoint), text_config)
        except OSError:  # no generation_config.json: derive it from the model config, as transformers does
            generation = GenerationConfig.from_model_config(text_config)
        missing = missing_ids(generation)
        if missing:
            raise NotAFlorence2Checkpoint(
                f"{checkpoint} names no {' or '.join(missing)} in generation_config.json or "
                "config.json; add them to generation_config.json (Florence-2: decoder_start_token_id 2, "
                "eos_token_id 2)"
            )
        generation.save_pretrained(staging)
        shutil.copyfile(checkpoint / "config.json", staging / "config.json")
        for name in HF_FILES:
            if not (staging / name).is_file():
                raise NotAFlorence2Checkpoint(f"{checkpoint} did not yield {name}; is its processor Florence-2's?")
            shutil.copyfile(staging / name, out / name)


def _text_config(checkpoint: Path) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(checkpoint).text_config


def file_sizes(out: Path) -> dict[str, int]:
    """Bytes of every file in the folder except ``export.json``, which lists them."""
    return {
        str(p.relative_to(out)): p.stat().st_size
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "export.json"
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
