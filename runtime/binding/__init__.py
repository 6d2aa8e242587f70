"""The ``AI`` binding: schema validation, the model registry, ``AI.run(model, payload)`` -> chat.completion."""

from runtime.binding.ai import AIBinding
from runtime.binding.registry import ModelRegistry, RegisteredModel
from runtime.binding.validation import PayloadValidator

__all__ = ["AIBinding", "ModelRegistry", "PayloadValidator", "RegisteredModel"]
