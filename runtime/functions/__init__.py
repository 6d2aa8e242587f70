"""Edge functions: discovery, hot reload, ``env`` and ``ctx``, invocation within time limits."""

from runtime.functions.runner import FunctionRunner, Invocation

__all__ = ["FunctionRunner", "Invocation"]
