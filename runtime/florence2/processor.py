"""Florence2Processor without torch: prompts to ids, images to pixel values, generated ids back to results.

Built once per model folder from the files transformers saves there (tokenizer.json, tokenizer_config.json,
preprocessor_config.json, processor_config.json) and shared by every request; prompt ids are cached per
(task, input). Ids, pixel values, decoded text and parsed results equal transformers' ``Florence2Processor``
(4.57) wherever it accepts the request; see ``image.py`` and ``postprocess.py`` for the few differences there.

Where transformers builds a prompt from anything, we refuse with InvalidTaskInput (400) instead:
- an unknown tag, or text that does not start with a tag (transformers sends such text to the model as is);
- input after a tag that takes none (transformers raises ValueError), or no input after a tag that needs one
  (transformers fills the template with an empty string);
- a region that is not exactly four ``<loc_0..999>`` tokens, or free text holding a task tag or ``<image>``
  (transformers removes or mixes tags, and an extra ``<image>`` breaks the image-feature scatter);
- a prompt longer than ``model_max_length`` minus the image tokens (the model has no positions for it).
Surrounding whitespace of the input is stripped, as transformers strips it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from runtime.errors import InvalidTaskInput
from runtime.florence2.configs import ImageConfig, ParseConfig, TokenizerConfig, read_json
from runtime.florence2.image import ImagePreprocessor
from runtime.florence2.postprocess import post_process
from runtime.florence2.tasks import get_task
from runtime.florence2.tokenizer import PromptTokenizer


class Florence2Processor:
    def __init__(self, tokenizer: PromptTokenizer, image_config: ImageConfig, parse_config: ParseConfig) -> None:
        self.tokenizer = tokenizer
        self.image_config = image_config
        self.parse_config = parse_config
        self._images = ImagePreprocessor(image_config)
        settings = tokenizer.config
        self.bos_id = tokenizer.token_id(settings.bos_token)
        self.eos_id = tokenizer.token_id(settings.eos_token)
        self.pad_id = tokenizer.token_id(settings.pad_token)
        self.image_token_id = tokenizer.token_id(settings.image_token)
        self.num_image_tokens = image_config.image_seq_length
        limit = settings.model_max_length
        # The encoder sees the image tokens and the prompt together, within the text model's positions.
        self.max_prompt_tokens = None if limit is None else limit - self.num_image_tokens
        self._prompt_ids = lru_cache(maxsize=4096)(self._encode_prompt)

    def __reduce__(self) -> tuple[type[Florence2Processor], tuple[PromptTokenizer, ImageConfig, ParseConfig]]:
        """Pickled as what it is built from (the prompt cache is rebuilt): Ray's ingress checks requests with a
        model replica's processor."""
        return (Florence2Processor, (self.tokenizer, self.image_config, self.parse_config))

    @classmethod
    def from_model_dir(cls, path: str | Path) -> Florence2Processor:
        folder = Path(path)
        processor_config = read_json(folder / "processor_config.json", required=False)
        return cls(
            tokenizer=PromptTokenizer.from_files(
                folder / "tokenizer.json", TokenizerConfig.from_dict(read_json(folder / "tokenizer_config.json"))
            ),
            image_config=ImageConfig.from_dict(read_json(folder / "preprocessor_config.json")),
            parse_config=ParseConfig.from_dict(processor_config.get("post_processor_config") or {}),
        )

    def is_text_task(self, task: str) -> bool:
        """True for tasks whose answer is plain text (and so can be streamed)."""
        return get_task(task).is_text

    def validate(self, task: str, text_input: str | None) -> None:
        """Raise InvalidTaskInput unless the task and its input make a prompt."""
        self.prompt_ids(task, text_input)

    def prompt_ids(self, task: str, text_input: str | None) -> list[int]:
        """Ids of ``<s>`` + prompt + ``</s>`` (no image tokens), as Florence2Processor tokenizes them."""
        return list(self._prompt_ids(task, text_input))

    def input_ids(self, task: str, text_input: str | None) -> list[int]:
        """The image tokens followed by the prompt: the input_ids transformers' Florence2Processor returns."""
        return [self.image_token_id] * self.num_image_tokens + self.prompt_ids(task, text_input)

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        """float32 pixel_values [B, 3, H, W] of CLIPImageProcessor."""
        return self._images(images)

    def decode(self, token_ids: Sequence[int]) -> str:
        """Generated ids to text, special tokens kept (``batch_decode(skip_special_tokens=False)``)."""
        return self.tokenizer.decode(token_ids)

    def post_process(self, text: str, task: str, image_size: tuple[int, int]) -> dict[str, Any]:
        """``{task: result}`` in pixels of the original image; ``image_size`` is (width, height).

        Exactly transformers' ``post_process_generation``: a pure-text answer keeps the special tokens ``text``
        holds (``<pad>``, ``<loc_N>`` ...). ``answer`` is what the engine returns."""
        return post_process(text, get_task(task), image_size, self.parse_config)

    def answer(self, token_ids: Sequence[int], task: str, image_size: tuple[int, int]) -> dict[str, Any]:
        """``{task: result}`` of generated ids: ``post_process`` of their text, except that a pure-text answer is
        clean text, decoded without special tokens (transformers keeps ``<pad>`` there, and ``<loc_N>`` after a
        region category). Structured answers are transformers' exactly."""
        if get_task(task).is_text:
            text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        else:
            text = self.decode(token_ids)
        return self.post_process(text, task, image_size)

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids that never appear in a pure-text answer."""
        return self.tokenizer.special_ids

    def _encode_prompt(self, task: str, text_input: str | None) -> tuple[int, ...]:
        prompt = get_task(task).render(text_input)
        settings = self.tokenizer.config
        longest = self.tokenizer.longest_token_bytes
        if self.max_prompt_tokens is not None and longest is not None:
            # Tokenizing megabytes takes seconds; a text too long for any tokenization is refused unread.
            size = len(prompt.encode("utf-8"))
            if size > self.max_prompt_tokens * longest:
                raise InvalidTaskInput(
                    f"the prompt of {task} is {size} bytes long, over the {self.max_prompt_tokens} tokens the model "
                    f"takes with {self.num_image_tokens} image tokens; shorten the text input",
                    param="text",
                )
        ids = self.tokenizer.encode(settings.bos_token + prompt + settings.eos_token)
        if self.max_prompt_tokens is not None and len(ids) > self.max_prompt_tokens:
            raise InvalidTaskInput(
                f"the prompt of {task} is {len(ids)} tokens long; with {self.num_image_tokens} image tokens the "
                f"model takes at most {self.max_prompt_tokens}; shorten the text input",
                param="text",
            )
        return tuple(ids)
