"""What a request may ask of one model: its task and input make a prompt, its token and beam counts are in bounds.

The engine checks every request with these rules, and a caller that holds no engine (the ingress of a Ray
cluster, whose engines live in model replicas) checks with the very same object, received from a replica, so a
bad request is refused before any image is fetched or sent over the network.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.engine.api import TaskQuery
from runtime.engine.generation_config import GenerationConfig, SearchOptions
from runtime.errors import InvalidRequest, InvalidTaskInput
from runtime.florence2 import Florence2Processor


@dataclass(frozen=True)
class TaskRules:
    processor: Florence2Processor
    config: GenerationConfig
    max_new_tokens: int  # the engine's limit, already capped by the decoder's positions
    max_beams: int

    def is_text_task(self, task: str) -> bool:
        try:
            return self.processor.is_text_task(task)
        except InvalidTaskInput:
            return False

    def check(self, query: TaskQuery) -> tuple[int, ...]:
        """The prompt's token ids of a query that can run; raises for one that cannot."""
        prompt = self.processor.prompt_ids(query.task, query.text_input)
        self.options(query.max_new_tokens, query.num_beams)
        return tuple(prompt)

    def options(self, max_new: int | None, beams: int | None, *, ignore_eos: bool = False) -> SearchOptions:
        if max_new is None:
            max_new = min(self.config.default_max_new_tokens, self.max_new_tokens)
        elif not 1 <= max_new <= self.max_new_tokens:
            raise InvalidRequest(
                f"max_new_tokens must be between 1 and {self.max_new_tokens}, not {max_new}", param="max_new_tokens"
            )
        if beams is None:
            beams = min(self.config.num_beams, self.max_beams)
        elif not 1 <= beams <= self.max_beams:
            raise InvalidRequest(f"num_beams must be between 1 and {self.max_beams}, not {beams}", param="num_beams")
        return SearchOptions(num_beams=beams, max_length=max_new + 1, ignore_eos=ignore_eos)
