"""The Florence-2 engine: graphs on ONNX Runtime or OpenVINO, generation (greedy, beam, KV cache), ``load()``."""

from runtime.engine.api import Engine, ModelInfo, TaskRequest, TaskResult
from runtime.engine.model import Florence2Engine, load
from runtime.engine.settings import EngineSettings

__all__ = ["Engine", "EngineSettings", "Florence2Engine", "ModelInfo", "TaskRequest", "TaskResult", "load"]
