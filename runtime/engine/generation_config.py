"""The checkpoint's generation_config.json, and the per-request search options derived from it.

The defaults are those of transformers' GenerationConfig, so a folder whose file omits a key generates as
``model.generate()`` would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from runtime.errors import ModelLoadFailed

EarlyStopping = bool | Literal["never"]

# Token ids of BartConfig's (and the original Florence2LanguageConfig's) defaults.
BART_TEXT_DEFAULTS: dict[str, int] = {
    "bos_token_id": 0,
    "pad_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 2,
    "forced_eos_token_id": 2,
}
BART_TEXT_MODELS = frozenset({"bart", "florence2_language"})


@dataclass(frozen=True)
class GenerationConfig:
    decoder_start_token_id: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    forced_bos_token_id: int | None = None
    forced_eos_token_ids: tuple[int, ...] = ()
    no_repeat_ngram_size: int = 0
    num_beams: int = 1
    early_stopping: EarlyStopping = False
    length_penalty: float = 1.0
    max_length: int = 20  # decoder tokens, the decoder start included
    max_new_tokens: int | None = None

    @property
    def default_max_new_tokens(self) -> int:
        return self.max_new_tokens if self.max_new_tokens is not None else self.max_length - 1

    @classmethod
    def from_model_dir(cls, path: Path) -> GenerationConfig:
        """Read generation_config.json as transformers does; without one, the model config's values apply.

        Only token ids missing from generation_config.json are looked up in config.json (its text_config first),
        and there, for a BART text model, in BART's defaults: transformers leaves ids equal to them out of a saved
        config.json and reads them back from the defaults, so a folder exported elsewhere may name none.
        """
        model_config = _read_json(path / "config.json")
        text_config = model_config.get("text_config") or {}
        defaults = BART_TEXT_DEFAULTS if text_config.get("model_type") in BART_TEXT_MODELS else {}
        derived = {**defaults, **model_config, **text_config}
        gen_path = path / "generation_config.json"
        gen = _read_json(gen_path) if gen_path.exists() else derived

        def token(key: str) -> Any:
            return gen[key] if gen.get(key) is not None else derived.get(key)

        eos = token("eos_token_id")
        start = token("decoder_start_token_id")
        pad = token("pad_token_id")
        if eos is None or start is None:
            raise ModelLoadFailed(
                f"{path} names no eos_token_id or decoder_start_token_id in generation_config.json or config.json; "
                "re-export the model so that its generation config is complete"
            )
        forced_eos = gen.get("forced_eos_token_id")
        early = gen.get("early_stopping", False)
        return cls(
            decoder_start_token_id=int(start),
            eos_token_ids=_ids(eos),
            pad_token_id=int(pad) if pad is not None else _ids(eos)[0],
            forced_bos_token_id=_optional_int(gen.get("forced_bos_token_id")),
            forced_eos_token_ids=_ids(forced_eos) if forced_eos is not None else (),
            no_repeat_ngram_size=int(gen.get("no_repeat_ngram_size") or 0),
            num_beams=int(gen.get("num_beams") or 1),
            early_stopping=early if early == "never" else bool(early),
            length_penalty=float(gen.get("length_penalty", 1.0)),
            max_length=int(gen.get("max_length") or 20),
            max_new_tokens=_optional_int(gen.get("max_new_tokens")),
        )


@dataclass(frozen=True)
class SearchOptions:
    """What one request's search does: ``num_beams`` 1 is greedy; ``max_length`` counts the decoder start."""

    num_beams: int
    max_length: int
    ignore_eos: bool = False

    @property
    def max_new_tokens(self) -> int:
        return self.max_length - 1


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelLoadFailed(f"{path} is missing; a model folder needs it (see ARCHITECTURE.md)") from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadFailed(f"{path} cannot be read as JSON ({exc}); re-export the model") from exc
    if not isinstance(data, dict):
        raise ModelLoadFailed(f"{path} must hold a JSON object; re-export the model")
    return data


def _ids(value: int | list[int]) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, list) else (int(value),)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
