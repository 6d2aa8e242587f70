"""Florence-2's BART tokenizer through the ``tokenizers`` library, set up as BartTokenizerFast sets it up.

Encoding never adds special tokens (the processor writes ``<s>`` and ``</s>`` into the prompt itself). Decoding
keeps them by default, as ``batch_decode(..., skip_special_tokens=False)`` does, because post-processing reads the
location tokens; pure-text answers are decoded without them (``skip_special_tokens=True``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, pre_tokenizers

from runtime.errors import ModelLoadFailed
from runtime.florence2.configs import TokenizerConfig, require_file


class PromptTokenizer:
    def __init__(self, tokenizer: Tokenizer, config: TokenizerConfig) -> None:
        self._tokenizer = tokenizer
        self.config = config
        _apply_prefix_space(tokenizer, config.add_prefix_space)
        for token_id, content in config.added_tokens.items():
            if tokenizer.token_to_id(content) != token_id:
                raise ModelLoadFailed(
                    f"tokenizer.json and tokenizer_config.json disagree on the id of {content!r} "
                    f"({tokenizer.token_to_id(content)} vs {token_id}); save both from the same tokenizer"
                )

    @classmethod
    def from_files(cls, tokenizer_json: Path, config: TokenizerConfig) -> PromptTokenizer:
        try:
            tokenizer = Tokenizer.from_file(str(require_file(tokenizer_json)))
        except Exception as exc:  # the tokenizers library raises plain Exception subclasses from Rust
            raise ModelLoadFailed(f"cannot load {tokenizer_json}: {exc}") from exc
        return cls(tokenizer, config)

    @functools.cached_property
    def longest_token_bytes(self) -> int | None:
        """No token covers more UTF-8 bytes than this, so a text of n bytes is at least n / this tokens long.

        None when that does not hold: a normalizer or a pre-tokenizer other than byte-level may drop text.
        """
        if self._tokenizer.normalizer is not None:
            return None
        if not isinstance(self._tokenizer.pre_tokenizer, pre_tokenizers.ByteLevel):
            return None
        return max(len(token.encode("utf-8")) for token in self._tokenizer.get_vocab(with_added_tokens=True))

    def token_id(self, token: str) -> int:
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
            raise ModelLoadFailed(
                f"the tokenizer has no token {token!r}; the model folder needs Florence-2's tokenizer"
            )
        return token_id

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    @functools.cached_property
    def special_ids(self) -> frozenset[int]:
        """Ids that ``skip_special_tokens=True`` drops: the added tokens marked special (for Florence-2 also the
        task markers and ``<loc_N>``), as the tokenizers library, and so transformers, decides it."""
        return frozenset(i for i, token in self._tokenizer.get_added_tokens_decoder().items() if token.special)

    def decode(self, token_ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        text = self._tokenizer.decode([int(i) for i in token_ids], skip_special_tokens=skip_special_tokens)
        return clean_up_tokenization(text) if self.config.clean_up_tokenization_spaces else text


def clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization``: drop the spaces BPE leaves before punctuation and contractions."""
    return (
        text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


def _apply_prefix_space(tokenizer: Tokenizer, add_prefix_space: bool) -> None:
    """transformers rebuilds the top-level pre-tokenizer when its add_prefix_space disagrees with the config."""
    if tokenizer.pre_tokenizer is None:
        return
    try:
        state = json.loads(tokenizer.pre_tokenizer.__getstate__())
        if state.get("add_prefix_space", add_prefix_space) != add_prefix_space:
            state["add_prefix_space"] = add_prefix_space
            tokenizer.pre_tokenizer = getattr(pre_tokenizers, state.pop("type"))(**state)
    except (TypeError, ValueError, AttributeError, KeyError):
        # Custom or nested pre-tokenizers cannot be rebuilt from their state; transformers leaves them as they are.
        return
