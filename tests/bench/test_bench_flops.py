"""The analytic FLOP counts of bench/flops.py equal torch's FlopCounterMode on the random tiny model, stage by stage.

Eager attention is used so that every attention product is a matmul the counter sees (its SDPA formulas do not
cover the CPU kernels). A second image size whose last stages do not divide into windows checks the padding.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from bench import flops  # noqa: E402


@pytest.fixture(scope="module")
def model_and_shape(tiny_checkpoint: Path) -> tuple[object, flops.ModelShape]:
    model = transformers.Florence2ForConditionalGeneration.from_pretrained(
        tiny_checkpoint, attn_implementation="eager"
    ).eval()
    shape = flops.ModelShape.from_configs(
        json.loads((tiny_checkpoint / "config.json").read_text()),
        json.loads((tiny_checkpoint / "preprocessor_config.json").read_text()),
    )
    return model, shape


def _counted(fn: object) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()  # type: ignore[operator]
    return int(counter.get_total_flops())


@pytest.mark.parametrize("size", [(768, 768), (224, 160)])
def test_vision_flops_match_the_counter(model_and_shape: tuple, size: tuple[int, int]) -> None:
    model, shape = model_and_shape
    shape = replace(shape, image_size=size)
    pixels = torch.randn(1, 3, *size)
    assert _counted(lambda: model.get_image_features(pixels)) == flops.vision_flops(shape)
    features = model.get_image_features(pixels)
    assert features.shape[1] == shape.image_tokens()


def test_text_flops_match_the_counter(model_and_shape: tuple) -> None:
    model, shape = model_and_shape
    seq = 40
    language = model.model.language_model
    embeds = torch.randn(1, seq, shape.text.d_model)
    mask = torch.ones(1, seq, dtype=torch.long)
    assert _counted(lambda: language.encoder(inputs_embeds=embeds, attention_mask=mask)) == (
        flops.text_encoder_flops(shape, seq)
    )

    encoded = language.encoder(inputs_embeds=embeds, attention_mask=mask)
    cache = transformers.EncoderDecoderCache(transformers.DynamicCache(), transformers.DynamicCache())
    outputs: list = []

    def step(token: int) -> None:
        out = model(
            encoder_outputs=encoded,
            attention_mask=mask,
            decoder_input_ids=torch.tensor([[token]]),
            past_key_values=outputs[-1].past_key_values if outputs else cache,
            use_cache=True,
        )
        outputs.append(out)

    assert _counted(lambda: step(2)) == flops.first_decode_flops(shape, seq)
    for position in (2, 3):
        assert _counted(lambda: step(5)) == flops.decoder_step_flops(shape, position, seq)


def test_large_architecture_sizes() -> None:
    """Florence-2-large at 768x768: 577 image tokens, and a vision encoder of about 1.5 TFLOP."""
    from export.tiny import ARCHS

    large = ARCHS["large"]
    shape = flops.ModelShape(
        vision=flops.VisionShape(
            embed_dim=large.vision_dims,
            num_heads=large.vision_heads,
            num_groups=large.vision_heads,
            depths=large.vision_depths,
            patch_size=(7, 3, 3, 3),
            patch_stride=(4, 2, 2, 2),
            patch_padding=(3, 1, 1, 1),
            window_size=12,
            mlp_ratio=4.0,
            in_channels=3,
            projection_dim=large.d_model,
        ),
        text=flops.TextShape(large.d_model, large.layers, large.layers, large.ffn, large.ffn, 51328),
        image_size=(768, 768),
    )
    assert shape.image_tokens() == 577
    assert 1.4e12 < flops.vision_flops(shape) < 1.6e12
    # a later decode step does about two FLOPs per decoder weight (~254M with the LM head) and little else
    assert 0.45e9 < flops.decoder_step_flops(shape, 10, 590) < 0.55e9
