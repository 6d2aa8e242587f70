"""Preprocessing against transformers' CLIPImageProcessor, over image modes, sizes and aspect ratios."""

from __future__ import annotations

import dataclasses
import io
import time
from typing import Any

import numpy as np
import pytest
from PIL import Image

from runtime.errors import InvalidImage
from runtime.florence2 import Florence2Processor
from runtime.florence2.image import ImagePreprocessor

TOLERANCE = 1e-5
UINT8_MODES = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2, "CMYK": 4, "YCbCr": 3, "RGBX": 4}


def make_image(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Noise with a gradient under it, in any mode Pillow decodes into (noise is the hardest case for resizing)."""
    width, height = size
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.linspace(0, 120, height), np.linspace(0, 120, width))
    if mode in UINT8_MODES:
        bands = UINT8_MODES[mode]
        data = np.clip(ramp[..., None] + rng.integers(0, 136, (height, width, bands)), 0, 255).astype(np.uint8)
        return Image.frombytes(mode, size, data.tobytes())
    if mode == "1":
        return Image.fromarray(rng.random((height, width)) < ramp / 240)
    if mode == "I;16":
        return Image.fromarray((ramp * 200 + rng.integers(0, 40000, (height, width))).astype(np.uint16))
    if mode == "I":
        return Image.fromarray((ramp * 3 + rng.integers(-300, 400, (height, width))).astype(np.int32))
    if mode == "F":
        return Image.fromarray((ramp + rng.normal(0, 60, (height, width))).astype(np.float32))
    if mode in ("P", "PA"):
        return make_image("RGB", size, seed).quantize(colors=64).convert(mode)
    if mode == "P+transparency":
        image = make_image("RGB", size, seed).quantize(colors=32)
        image.info["transparency"] = 3
        return image
    raise ValueError(mode)


def encoded(image: Image.Image, fmt: str, **options: Any) -> Image.Image:
    """The image written in a file format and decoded again (lazily, as a request's image is)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return Image.open(io.BytesIO(buffer.getvalue()))


def decoded_cases() -> list[tuple[str, Any]]:
    return [
        ("jpeg-rgb", lambda size: encoded(make_image("RGB", size), "JPEG", quality=90)),
        ("jpeg-gray", lambda size: encoded(make_image("L", size), "JPEG")),
        ("jpeg-cmyk", lambda size: encoded(make_image("CMYK", size), "JPEG")),
        ("png-rgba", lambda size: encoded(make_image("RGBA", size), "PNG")),
        ("png-palette-transparent", lambda size: encoded(make_image("P+transparency", size), "PNG")),
        ("png-16bit", lambda size: encoded(make_image("I;16", size), "PNG")),
        ("webp", lambda size: encoded(make_image("RGB", size), "WEBP", quality=80)),
        ("gif", lambda size: encoded(make_image("P", size), "GIF")),
        ("bmp-1bit", lambda size: encoded(make_image("1", size), "BMP")),
        ("tiff-float", lambda size: encoded(make_image("F", size), "TIFF")),
    ]


MODES = [*UINT8_MODES, "1", "I;16", "I", "F", "P", "PA", "P+transparency"]
MODE_SIZES = [(5, 7), (333, 500), (1024, 768)]
# (width, height): tiny, square, landscape, portrait, extreme strips; heights 1 and 3 are tested below.
SIZES = [(2, 2), (7, 5), (17, 9), (64, 48), (500, 333), (768, 768), (1024, 768), (4000, 300), (300, 4000),
         (20000, 10), (10, 2000), (769, 767)]  # fmt: skip


def oracle_pixels(oracle: Any, image: Image.Image, **kwargs: Any) -> np.ndarray:
    return oracle.image_processor(image, return_tensors="np", **kwargs)["pixel_values"]


def check_parity(processor: Florence2Processor, oracle: Any, image: Image.Image, case: str, worst: dict) -> None:
    ours = processor.preprocess([image])
    theirs = oracle_pixels(oracle, image)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape == (1, 3, 768, 768)
    diff = float(np.abs(ours - theirs.astype(np.float32)).max())
    record(worst, diff, case)


def record(worst: dict, diff: float, case: str) -> None:
    worst["images"] += 1
    if diff > worst["max_abs_diff"] or worst["case"] is None:
        worst.update(max_abs_diff=diff, case=case)
    assert diff <= TOLERANCE, f"{case}: max abs diff {diff}"


@pytest.mark.parametrize("size", MODE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_matches_clip_image_processor(
    processor: Florence2Processor, oracle: Any, preprocess_worst: dict, mode: str, size: tuple[int, int]
) -> None:
    image = make_image(mode, size, seed=MODES.index(mode))
    check_parity(processor, oracle, image, f"{mode} {size}", preprocess_worst)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_size_matches_clip_image_processor(
    processor: Florence2Processor, oracle: Any, preprocess_worst: dict, size: tuple[int, int]
) -> None:
    check_parity(processor, oracle, make_image("RGB", size, seed=size[0]), f"RGB {size}", preprocess_worst)


@pytest.mark.parametrize(("name", "make"), decoded_cases(), ids=[name for name, _ in decoded_cases()])
def test_decoded_files_match_clip_image_processor(
    processor: Florence2Processor, oracle: Any, preprocess_worst: dict, name: str, make: Any
) -> None:
    check_parity(processor, oracle, make((257, 190)), name, preprocess_worst)


@pytest.mark.parametrize("size", [(1, 1), (50, 1), (7, 3), (2000, 1), (3, 3)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_images_one_or_three_pixels_high(
    processor: Florence2Processor, oracle: Any, preprocess_worst: dict, size: tuple[int, int]
) -> None:
    """transformers takes such arrays for channels-first; told the layout, it agrees with us exactly."""
    image = make_image("RGB", size, seed=3)
    ours = processor.preprocess([image])
    theirs = oracle_pixels(oracle, image, input_data_format="channels_last")
    record(preprocess_worst, float(np.abs(ours - theirs).max()), f"RGB {size}, channels_last given")
    try:  # Without the hint transformers fails or returns something else: the documented difference.
        guessed = oracle_pixels(oracle, image)
    except ValueError:
        return
    assert np.abs(guessed - ours).max() > TOLERANCE


def test_batches_stack_single_images(processor: Florence2Processor, oracle: Any) -> None:
    images = [make_image("RGB", (640, 480)), make_image("L", (33, 90)), make_image("RGBA", (768, 768))]
    batch = processor.preprocess(images)
    assert batch.shape == (3, 3, 768, 768) and batch.flags.c_contiguous
    for i, image in enumerate(images):
        np.testing.assert_array_equal(batch[i], processor.preprocess([image])[0])
    np.testing.assert_allclose(batch, oracle_pixels(oracle, images), atol=TOLERANCE, rtol=0)
    assert processor.preprocess([]).shape == (0, 3, 768, 768)


def test_comparison_catches_a_different_resample_filter(processor: Florence2Processor, oracle: Any) -> None:
    """Negative control: bilinear instead of the configured bicubic is far outside the tolerance."""
    broken = ImagePreprocessor(dataclasses.replace(processor.image_config, resample=Image.Resampling.BILINEAR))
    image = make_image("RGB", (500, 333))
    assert np.abs(broken([image]) - oracle_pixels(oracle, image)).max() > 100 * TOLERANCE


def test_comparison_catches_compositing_alpha_on_white(processor: Florence2Processor, oracle: Any) -> None:
    """Negative control: transformers drops alpha; compositing onto white (a common alternative) differs."""
    image = make_image("RGBA", (300, 200))
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    composited = Image.alpha_composite(white, image).convert("RGB")
    assert np.abs(processor.preprocess([composited]) - oracle_pixels(oracle, image)).max() > 100 * TOLERANCE


def test_comparison_catches_normalizing_in_float64(processor: Florence2Processor, oracle: Any) -> None:
    """Negative control at the scale of rounding: float64 normalization differs from transformers' float32."""
    image = make_image("RGB", (640, 480))
    array = np.asarray(image.resize((768, 768), Image.Resampling.BICUBIC, reducing_gap=None), dtype=np.float64)
    config = processor.image_config
    float64 = ((array * config.rescale_factor - np.array(config.mean)) / np.array(config.std)).transpose(2, 0, 1)
    theirs = oracle_pixels(oracle, image)[0]
    assert np.abs(float64 - theirs).max() > 0  # our exact table lookup shows 0 here
    assert np.abs(processor.preprocess([image])[0] - theirs).max() == 0


def test_unconvertible_mode_is_an_invalid_image(processor: Florence2Processor) -> None:
    with pytest.raises(InvalidImage, match="conversion from La to L not supported"):
        processor.preprocess([Image.new("La", (4, 4))])


def test_truncated_file_is_an_invalid_image(processor: Florence2Processor) -> None:
    """A lazily opened image decodes during preprocessing; damaged data must become our error, not a 500."""
    payload = io.BytesIO()
    make_image("RGB", (300, 200)).save(payload, format="JPEG")
    truncated = Image.open(io.BytesIO(payload.getvalue()[:2000]))
    with pytest.raises(InvalidImage, match="truncated"):
        processor.preprocess([truncated])


def test_preprocessing_time_of_a_decoded_1024x768_jpeg(processor: Florence2Processor, capsys: Any) -> None:
    payload = io.BytesIO()
    make_image("RGB", (1024, 768)).save(payload, format="JPEG", quality=90)
    data = payload.getvalue()

    def once(decoded_first: bool) -> float:
        image = Image.open(io.BytesIO(data))
        if decoded_first:
            image.load()
        start = time.perf_counter()
        processor.preprocess([image])
        return time.perf_counter() - start

    with_decode = sorted(once(False) for _ in range(7))[3]
    without_decode = sorted(once(True) for _ in range(7))[3]
    with capsys.disabled():
        print(
            f"\npreprocess 1024x768 JPEG (median of 7): {with_decode * 1e3:.1f} ms with decoding, "
            f"{without_decode * 1e3:.1f} ms after decoding"
        )
    assert with_decode < 0.5  # generous: a 2-core CI box shared with other jobs
