"""Builds a remote-code-format Florence-2 checkpoint (as microsoft/Florence-2-* ship) from a native one.

It inverts the exporter's key map, so a conversion back must give the original model exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BartTokenizerFast, Florence2ForConditionalGeneration

from export.remote_format import TRANSPOSED, remote_key


def make_remote_checkpoint(native: Path, out: Path, *, vocab_rows: int | None = None) -> Path:
    """Write ``native`` in the remote-code layout; ``vocab_rows`` truncates the embeddings (as the hub's 51289)."""
    out.mkdir(parents=True, exist_ok=True)
    model = Florence2ForConditionalGeneration.from_pretrained(native).eval()
    config = json.loads((native / "config.json").read_text())
    rows = vocab_rows or config["text_config"]["vocab_size"]

    remote: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        new = remote_key(key)
        assert new is not None, f"no remote name for {key}"
        value = tensor.t() if new in TRANSPOSED else tensor
        if key.endswith(("embed_tokens.weight", "shared.weight")) or key == "lm_head.weight":
            value = value[:rows]
        remote[new] = value.contiguous().clone()
    remote["language_model.final_logits_bias"] = torch.zeros(1, rows)
    save_file(remote, str(out / "model.safetensors"))

    vision, text = config["vision_config"], dict(config["text_config"])
    text.pop("model_type", None)
    text["vocab_size"] = rows
    remote_config = {
        "architectures": ["Florence2ForConditionalGeneration"],
        "auto_map": {
            "AutoConfig": "configuration_florence2.Florence2Config",
            "AutoModelForCausalLM": "modeling_florence2.Florence2ForConditionalGeneration",
        },
        "model_type": "florence2",
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
        "projection_dim": vision["projection_dim"],
        "vocab_size": rows,
        "is_encoder_decoder": True,
        "random_weights": True,
        "text_config": {**text, "model_type": "florence2_language"},
        "vision_config": {
            "model_type": "davit",
            "drop_path_rate": vision["drop_path_rate"],
            "patch_size": vision["patch_size"],
            "patch_stride": vision["patch_stride"],
            "patch_padding": vision["patch_padding"],
            "patch_prenorm": vision["patch_prenorm"],
            "enable_checkpoint": False,
            "dim_embed": vision["embed_dim"],
            "num_heads": vision["num_heads"],
            "num_groups": vision["num_groups"],
            "depths": vision["depths"],
            "window_size": vision["window_size"],
            "projection_dim": vision["projection_dim"],
            "visual_temporal_embedding": {
                "type": "COSINE",
                "max_temporal_embeddings": vision["max_temporal_embeddings"],
            },
            "image_pos_embed": {"type": "learned_abs_2d", "max_pos_embeddings": vision["max_position_embeddings"]},
            "image_feature_source": ["spatial_avg_pool", "temporal_avg_pool"],
        },
    }
    (out / "config.json").write_text(json.dumps(remote_config, indent=2))

    # The hub folders ship BART's plain tokenizer; their processor code adds Florence-2's tokens at load time.
    plain = BartTokenizerFast(vocab_file=str(native / "vocab.json"), merges_file=str(native / "merges.txt"))
    plain.save_pretrained(out)
    preprocessor = json.loads((native / "preprocessor_config.json").read_text())
    preprocessor.pop("image_seq_length")
    preprocessor["auto_map"] = {"AutoProcessor": "processing_florence2.Florence2Processor"}
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return out
