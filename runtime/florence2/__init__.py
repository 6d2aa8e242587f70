"""Torch-free Florence-2 processing: task table, prompts, tokenizer, image preprocessing, post-processing."""

from runtime.florence2.coordinates import boxes_to_loc_tokens
from runtime.florence2.processor import Florence2Processor
from runtime.florence2.tasks import TASKS, InputKind, ParseType, Task, get_task, split_task

__all__ = [
    "TASKS",
    "Florence2Processor",
    "InputKind",
    "ParseType",
    "Task",
    "boxes_to_loc_tokens",
    "get_task",
    "split_task",
]
