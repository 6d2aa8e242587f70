"""Random-weight Florence-2 checkpoints, built locally in the Hugging Face layout.

Real weights cannot always be downloaded (CI has no model hub), so tests and benchmarks build a checkpoint
folder that looks exactly like one from the hub: ``config.json``, ``model.safetensors``,
``generation_config.json``, ``preprocessor_config.json``, ``processor_config.json`` and the tokenizer files.
``Florence2ForConditionalGeneration.from_pretrained`` and ``AutoProcessor.from_pretrained`` load it.

The tokenizer is a real byte-level BPE trained here on a small built-in corpus, with Florence-2's added tokens
(``<od>``, ``<loc_0>`` ... ``<loc_999>``, ``<poly>``, ``<sep>``, ``<image>`` ...) and BART's special ids.

Weights are random and mean nothing; the folder's config says so (``"random_weights": true``) so that whatever
serves it can say so loudly.

    python -m export.tiny --out checkpoints/tiny [--arch tiny|base|large] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Florence-2's added tokens, in the order of the original tokenizer (ids follow BART's 50265 base tokens there).
FLORENCE_TASK_TOKENS: tuple[str, ...] = (
    "<od>", "</od>", "<ocr>", "</ocr>",
    *(f"<loc_{i}>" for i in range(1000)),
    "<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>",
    "<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>", "<region_to_desciption>",
    "</region_to_desciption>", "<proposal>", "</proposal>", "<poly>", "</poly>", "<and>",
)  # fmt: skip
IMAGE_TOKEN = "<image>"

# Pronouns and filler phrases that phrase grounding drops; the same list the released checkpoints carry.
BANNED_GROUNDING_TOKENS: tuple[str, ...] = (
    "it", "I", "me", "mine", "you", "your", "yours", "he", "him", "his", "she", "her", "hers", "they", "them",
    "their", "theirs", "one", "oneself", "we", "us", "our", "ours", "its", "myself", "yourself", "himself",
    "herself", "itself", "ourselves", "yourselves", "themselves", "this", "that", "these", "those", "who", "whom",
    "whose", "which", "what", "all", "another", "any", "anybody", "anyone", "anything", "each", "everybody",
    "everyone", "everything", "few", "many", "nobody", "none", "several", "some", "somebody", "someone",
    "something", "each other", "one another", "the image", "image", "images", "the", "a", "an", "a group",
    "other objects", "lots", "a set",
)  # fmt: skip

# Parse rules per post-processing type; Florence2PostProcessor needs a key for every type it may be asked for.
POST_PROCESSOR_CONFIG: dict[str, Any] = {
    "ocr": {
        "PATTERN": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
        "AREA_THRESHOLD": 0.0,
    },
    "phrase_grounding": {"banned_grounding_tokens": list(BANNED_GROUNDING_TOKENS)},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}

# Words for the BPE corpus: captions, OCR-like text and every task prompt, so merges are realistic.
_WORDS = (
    "a an the of in on at with and or to from by for is are was were be has have this that there here it its "
    "image photo picture shows showing describe detail paragraph what where which who text region regions "
    "locate objects object category name names description descriptions proposals phrases caption polygon "
    "mask green red blue yellow black white gray brown orange purple pink car cars truck bus bicycle person "
    "people man woman child dog cat bird horse cow sheep tree trees building house door window street road "
    "sky cloud clouds grass water river lake sea beach mountain table chair sofa bed lamp cup bottle book "
    "phone laptop screen sign stop traffic light parked standing sitting walking running holding wearing "
    "front back left right top bottom middle large small big little old new open closed two three four many "
    "STOP EXIT OPEN SALE 2024 100 km/h Main St. Café naïve über 東京 — “quoted” 'single' (paren) [bracket] #tag"
)


@dataclass(frozen=True)
class Arch:
    """Sizes of one Florence-2 variant. ``base`` and ``large`` are the released architectures."""

    vision_dims: tuple[int, int, int, int]
    vision_heads: tuple[int, int, int, int]
    vision_depths: tuple[int, int, int, int]
    d_model: int
    layers: int
    heads: int
    ffn: int
    vocab_size: int | None  # None: the tokenizer's size rounded up to a multiple of 64
    init_std: float
    # The text decoder's own init, where it differs from init_std: its layers' matrices (cross-attention queries and
    # keys excepted, they keep init_std), its cross-attention values and output, and its learned positions.
    decoder_layer_std: float | None = None
    decoder_cross_value_std: float | None = None
    decoder_position_std: float | None = None


ARCHS: dict[str, Arch] = {
    # Small enough to export and run in seconds; init std 0.5 so that greedy outputs vary with image and prompt
    # (with a small std a random model emits one token forever and a broken export would still pass parity).
    # The decoder's layers get 0.1, its positions 1.5: at 0.5 they saturate, each step's output stops depending on
    # the tokens before it, and greedy decoding without the no-repeat rule emits one token over and over, which a
    # broken KV cache reproduces just as well. Its cross-attention keeps sharp queries and keys (0.5) with values
    # and output at 0.2, so that every answer still hangs on the image and on the encoder's padding mask (scaling
    # the image features by 1.01 changes 15 of 15 answers of the engine tests' cases; at 0.1 it changed none).
    "tiny": Arch((16, 32, 48, 64), (2, 2, 4, 4), (1, 1, 2, 1), 64, 2, 4, 128, None, 0.5, 0.1, 0.2, 1.5),
    "base": Arch((128, 256, 512, 1024), (4, 8, 16, 32), (1, 1, 9, 1), 768, 6, 12, 3072, 51328, 0.02),
    "large": Arch((256, 512, 1024, 2048), (8, 16, 32, 64), (1, 1, 9, 1), 1024, 12, 16, 4096, 51328, 0.02),
}

IMAGE_SIZE = 768

# A random model never emits EOS on purpose: with the real checkpoints' max_length (1025, the model cards'
# max_new_tokens=1024) every answer it gives without max_tokens is 1024 tokens of noise, seconds long. 64 new
# tokens are enough to see every task's answer shape; a request may still ask for up to FLORENCE_MAX_NEW_TOKENS, and
# an answer cut here says so (finish_reason "length").
RANDOM_MODEL_MAX_LENGTH = 65


def _corpus(seed: int) -> list[str]:
    from export.prompts import TASK_PROMPTS  # the released prompts; one source of truth

    rng = random.Random(seed)
    words = _WORDS.split()
    lines = [rng.choice(("", "A ", "The ")) + " ".join(rng.choices(words, k=rng.randint(3, 14))) for _ in range(4000)]
    return lines + list(TASK_PROMPTS) * 20


def build_tokenizer(out: Path, seed: int, bpe_vocab: int = 2000) -> Any:
    """Train a byte-level BPE, wrap it as BartTokenizerFast with Florence-2's tokens, save it into ``out``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import BartTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_vocab,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],  # BART's ids: bos 0, pad 1, eos 2, unk 3
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=False)
    fast = BartTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
        model_max_length=1024,
    )  # fmt: skip
    fast.add_special_tokens({"additional_special_tokens": [*FLORENCE_TASK_TOKENS, IMAGE_TOKEN]})
    # Registering <image> as the image token must not move ids: save with the tokens added, then reload with
    # extra_special_tokens so that `tokenizer.image_token(_id)` exist for Florence2Processor.
    with tempfile.TemporaryDirectory() as tmp:
        fast.save_pretrained(tmp)
        fast = BartTokenizerFast.from_pretrained(tmp, extra_special_tokens={"image_token": IMAGE_TOKEN})
    fast.save_pretrained(out)
    return fast


def _init_weights(model: Any, spec: Arch, seed: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=gen) * spec.init_std)
            elif name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=gen) * spec.init_std * 0.1)
        # A second pass, so that the first draws the same numbers whatever the decoder's own init is.
        decoder = model.model.language_model.decoder
        if spec.decoder_layer_std is not None:
            for name, param in decoder.layers.named_parameters():
                if param.dim() < 2 or ".encoder_attn.q_proj." in name or ".encoder_attn.k_proj." in name:
                    continue
                cross_value = ".encoder_attn.v_proj." in name or ".encoder_attn.out_proj." in name
                std = spec.decoder_cross_value_std if cross_value and spec.decoder_cross_value_std else None
                param.copy_(torch.randn(param.shape, generator=gen) * (std or spec.decoder_layer_std))
        if spec.decoder_position_std is not None:
            weight = decoder.embed_positions.weight
            weight.copy_(torch.randn(weight.shape, generator=gen) * spec.decoder_position_std)


def build_checkpoint(out: Path, arch: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight Florence-2 checkpoint folder and return its path."""
    import torch
    from transformers import (
        BartConfig,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
        Florence2VisionConfig,
        GenerationConfig,
    )

    spec = ARCHS[arch]
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out, seed)
    image_token_id = tokenizer.image_token_id
    vocab_size = spec.vocab_size or -(-len(tokenizer) // 64) * 64
    text = BartConfig(
        vocab_size=vocab_size,
        d_model=spec.d_model,
        encoder_layers=spec.layers,
        decoder_layers=spec.layers,
        encoder_attention_heads=spec.heads,
        decoder_attention_heads=spec.heads,
        encoder_ffn_dim=spec.ffn,
        decoder_ffn_dim=spec.ffn,
        max_position_embeddings=1024,
        scale_embedding=False,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_bos_token_id=0,
        forced_eos_token_id=2,
        dropout=0.1,
        attention_dropout=0.0,
    )
    vision = Florence2VisionConfig(
        embed_dim=spec.vision_dims,
        num_heads=spec.vision_heads,
        num_groups=spec.vision_heads,
        depths=spec.vision_depths,
        projection_dim=spec.d_model,
        window_size=12,
    )
    config = Florence2Config(text_config=text.to_dict(), vision_config=vision.to_dict(), image_token_id=image_token_id)
    config.random_weights = True  # read by the runtime, which warns that outputs mean nothing
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(config).eval()
    _init_weights(model, spec, seed)
    model.save_pretrained(out, safe_serialization=True)

    GenerationConfig(
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_bos_token_id=0,
        forced_eos_token_id=2,
        no_repeat_ngram_size=3,
        num_beams=3,
        early_stopping=True,
        max_length=RANDOM_MODEL_MAX_LENGTH,
    ).save_pretrained(out)

    image_processor = CLIPImageProcessor(
        do_resize=True,
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        resample=3,  # bicubic
        do_center_crop=False,
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_convert_rgb=True,
        image_seq_length=(IMAGE_SIZE // 32) ** 2 + 1,
    )
    processor = Florence2Processor(
        image_processor=image_processor, tokenizer=tokenizer, post_processor_config=POST_PROCESSOR_CONFIG
    )
    processor.save_pretrained(out)
    _mark_random(out / "config.json")
    return out


def _mark_random(config_path: Path) -> None:
    data = json.loads(config_path.read_text())
    data["random_weights"] = True
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument("--arch", choices=sorted(ARCHS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        print(f"error: the export extra is missing ({exc.name}); run: make install", file=sys.stderr)
        return 2
    path = build_checkpoint(args.out, args.arch, args.seed)
    print(f"wrote random-weight Florence-2 ({args.arch}, seed {args.seed}) checkpoint to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
