"""OpenVINO on the exported vision encoder graph, the vision stage alone: a peer of the engine's vision encoder.

OpenVINO reads the model folder's ``vision_encoder.onnx`` as it is (external data included) and compiles it for
the CPU with ``INFERENCE_PRECISION_HINT`` f32 or bf16; bf16 runs on AMX or AVX-512 BF16 units. The image is
preprocessed as the engine does it (``runtime.florence2``), so the graph sees the same ``pixel_values``.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench import workload
from bench.measurement import Measurement
from bench.workload import Job

VISION_GRAPH = "vision_encoder.onnx"  # the fp32 graph: OpenVINO chooses its own precision from the hint


class OpenVinoVisionRunner:
    def __init__(self, model_dir: Path, precision: str = "f32", threads: int = 0) -> None:
        import openvino

        from runtime.florence2.configs import ImageConfig, read_json
        from runtime.florence2.image import ImagePreprocessor

        config: dict[str, str | int] = {"INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = openvino.Core()
        self.compiled = core.compile_model(core.read_model(str(model_dir / "onnx" / VISION_GRAPH)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.preprocess = ImagePreprocessor(ImageConfig.from_dict(read_json(model_dir / "preprocessor_config.json")))
        self.image = workload.image()
        # What OpenVINO compiled for: without a bf16 unit a bf16 hint falls back to f32.
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.device_name = f"OpenVINO CPU {getattr(hint, 'get_type_name', lambda: str(hint))()}"

    def warm_up(self) -> None:
        self.run(Job(max_new_tokens=1, num_beams=1))

    def run(self, job: Job) -> Measurement:
        """The job's image through preprocessing and the vision encoder; tokens and beams do not change it."""
        started = time.perf_counter()
        pixels = self.preprocess([self.image])
        preprocessed = time.perf_counter()
        self.request.infer({0: pixels})
        finished = time.perf_counter()
        return Measurement(
            stages={"preprocess": preprocessed - started, "vision_encoder": finished - preprocessed},
            end_to_end=None,
            new_tokens=0,
            prompt_tokens=0,
        )
