"""The ``generation_config.json`` an exported folder gets: complete, and the one the checkpoint really generates with.

Two sources fall short of that:
- The original remote-code checkpoints (``microsoft/Florence-2-*``) ship a ``generation_config.json`` of two keys
  (``num_beams`` 3, ``early_stopping`` false) that belongs to the outer model. Their ``generate()`` hands over to
  the language model, whose generation config transformers derives from ``text_config``: decoder start 2, forced
  BOS 0 and EOS 2, ``no_repeat_ngram_size`` 3, 3 beams, early stopping. That file is never read by it, so the
  conversion takes the text config's settings (``original_generation_config``).
- transformers drops ids equal to BART's defaults when it saves a native ``config.json``, and a native
  checkpoint's ``generation_config.json`` may name only some ids: ``complete`` fills each missing id from the text
  model's config, as ``generate()`` itself falls back to it.
"""

from __future__ import annotations

from typing import Any

from runtime.engine.generation_config import BART_TEXT_DEFAULTS

# Ids the runtime needs, filled from the text config where the generation config lacks them.
TOKEN_KEYS: tuple[str, ...] = (
    "bos_token_id",
    "pad_token_id",
    "eos_token_id",
    "decoder_start_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
)
# Everything the original language model's generation config takes from text_config.
SEARCH_KEYS: tuple[str, ...] = ("no_repeat_ngram_size", "num_beams", "early_stopping", "length_penalty", "max_length")

# transformers' default max_length (20) would cut every answer; the checkpoints' model cards generate with
# max_new_tokens=1024, which is what an exported folder offers when the text config names no max_length.
DEFAULT_MAX_LENGTH = 1025


def original_generation_config(text_config: dict[str, Any]) -> Any:
    """The generation config the original remote-code ``generate()`` runs with, from the hub's ``text_config``."""
    from transformers import GenerationConfig

    # where the hub's text_config is silent, the original Florence2LanguageConfig's defaults apply: BART's
    values: dict[str, Any] = {**BART_TEXT_DEFAULTS, "max_length": DEFAULT_MAX_LENGTH}
    values.update({k: text_config[k] for k in (*TOKEN_KEYS, *SEARCH_KEYS) if text_config.get(k) is not None})
    return GenerationConfig(**values)


def complete(generation: Any, text_config: Any) -> Any:
    """``generation`` (a transformers GenerationConfig) with every missing token id taken from ``text_config``."""
    for key in TOKEN_KEYS:
        if getattr(generation, key, None) is None and getattr(text_config, key, None) is not None:
            setattr(generation, key, getattr(text_config, key))
    return generation


def missing_ids(generation: Any) -> list[str]:
    """The ids without which no decoding can start or stop."""
    return [k for k in ("decoder_start_token_id", "eos_token_id") if getattr(generation, k, None) is None]
