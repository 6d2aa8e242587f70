"""The OpenAI-compatible API: router (thin HTTP), protocol (shapes), serving (the work)."""

from runtime.openai.router import openai_routes
from runtime.openai.serving import OpenAIServing

__all__ = ["OpenAIServing", "openai_routes"]
