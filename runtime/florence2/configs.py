"""The processing settings of a model folder, read once into frozen dataclasses.

``preprocessor_config.json`` (CLIPImageProcessor), ``tokenizer_config.json`` (BartTokenizerFast) and the
``post_processor_config`` of ``processor_config.json`` (Florence2PostProcessor). A missing key takes the default the
transformers class would use; a setting the runtime cannot reproduce fails at load time, never per request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from runtime.errors import ModelLoadFailed

# CLIPImageProcessor's defaults, for keys a preprocessor_config.json leaves out.
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_OCR_PATTERN = r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>"


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise ModelLoadFailed(f"{path.name} is missing from the model folder {path.parent}; re-export the model")
    return path


def read_json(path: Path, *, required: bool = True) -> dict[str, Any]:
    """A JSON object from the model folder; ModelLoadFailed when it is missing (and required) or unreadable."""
    if not required and not path.is_file():
        return {}
    require_file(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadFailed(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadFailed(f"{path} must hold a JSON object")
    return data


@dataclass(frozen=True)
class ImageConfig:
    """What CLIPImageProcessor does to an image: resize to height x width, rescale, normalize."""

    height: int
    width: int
    resample: Image.Resampling
    rescale_factor: float | None  # None: no rescaling
    mean: tuple[float, float, float] | None  # None: no normalization
    std: tuple[float, float, float] | None
    image_seq_length: int  # image tokens the vision encoder yields per image

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "preprocessor_config.json") -> ImageConfig:
        def fail(why: str) -> ModelLoadFailed:
            return ModelLoadFailed(f"{source}: {why}")

        size = data.get("size")
        if not (
            isinstance(size, Mapping) and isinstance(size.get("height"), int) and isinstance(size.get("width"), int)
        ):
            raise fail(f"size must be {{'height': H, 'width': W}} (Florence-2 resizes to a fixed size), got {size!r}")
        height, width = size["height"], size["width"]
        if not data.get("do_resize", True):
            raise fail("do_resize is false; Florence-2 needs every image resized to one fixed size")
        crop = data.get("crop_size", {"height": 224, "width": 224})
        if data.get("do_center_crop", True) and crop != {"height": height, "width": width}:
            raise fail(f"center cropping to {crop!r} after resizing to {size!r} is not supported")
        if "image_seq_length" not in data:
            raise fail("image_seq_length is missing; it gives the number of image tokens per image")
        try:
            resample = Image.Resampling(data.get("resample", Image.Resampling.BICUBIC))
        except ValueError as exc:
            raise fail(f"unknown resample filter {data.get('resample')!r}") from exc
        mean = tuple(data.get("image_mean", _CLIP_MEAN))
        std = tuple(data.get("image_std", _CLIP_STD))
        if len(mean) != 3 or len(std) != 3:
            raise fail("image_mean and image_std need one value per RGB channel")
        return cls(
            height=height,
            width=width,
            resample=resample,
            rescale_factor=float(data.get("rescale_factor", 1 / 255)) if data.get("do_rescale", True) else None,
            mean=mean if data.get("do_normalize", True) else None,  # type: ignore[arg-type]
            std=std if data.get("do_normalize", True) else None,  # type: ignore[arg-type]
            image_seq_length=int(data["image_seq_length"]),
        )


@dataclass(frozen=True)
class TokenizerConfig:
    """The tokenizer_config.json settings that change ids or decoded text."""

    bos_token: str
    eos_token: str
    pad_token: str
    image_token: str
    clean_up_tokenization_spaces: bool
    add_prefix_space: bool
    model_max_length: int | None  # None: no limit known
    added_tokens: Mapping[int, str]  # id -> content, to check tokenizer.json against

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenizerConfig:
        extra = data.get("extra_special_tokens") or {}
        max_length = data.get("model_max_length")
        # transformers writes a huge sentinel (int(1e30)) when a tokenizer has no limit.
        limit = int(max_length) if isinstance(max_length, int | float) and max_length < 1e9 else None
        return cls(
            bos_token=_content(data.get("bos_token", "<s>")),
            eos_token=_content(data.get("eos_token", "</s>")),
            pad_token=_content(data.get("pad_token", "<pad>")),
            image_token=_content(data.get("image_token", extra.get("image_token", "<image>"))),
            clean_up_tokenization_spaces=bool(data.get("clean_up_tokenization_spaces", False)),
            add_prefix_space=bool(data.get("add_prefix_space", False)),
            model_max_length=limit,
            added_tokens={int(i): _content(t) for i, t in (data.get("added_tokens_decoder") or {}).items()},
        )


@dataclass(frozen=True)
class ParseConfig:
    """Florence2PostProcessor's parse rules (``post_processor_config``)."""

    ocr_pattern: str = DEFAULT_OCR_PATTERN
    ocr_area_threshold: float = 0.0
    banned_grounding_tokens: frozenset[str] = frozenset()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParseConfig:
        ocr = data.get("ocr") or {}
        grounding = data.get("phrase_grounding") or {}
        return cls(
            ocr_pattern=ocr.get("PATTERN") or DEFAULT_OCR_PATTERN,
            ocr_area_threshold=float(ocr.get("AREA_THRESHOLD", 0.0)),
            banned_grounding_tokens=frozenset(grounding.get("banned_grounding_tokens", ())),
        )


def _content(token: Any) -> str:
    """A token as tokenizer_config.json writes it: a string, or an AddedToken dict with its content."""
    return str(token["content"]) if isinstance(token, Mapping) else str(token)
