"""Engine settings, read once (by runtime.config or a caller) into one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from runtime.engine.variants import VariantChoice

Provider = Literal["auto", "cpu", "cuda"]
GraphOptimization = Literal["disable", "basic", "extended", "all"]
BackendName = Literal["auto", "onnxruntime", "openvino"]
Precision = Literal["f32", "bf16"]

PROVIDERS: tuple[str, ...] = ("auto", "cpu", "cuda")
GRAPH_OPTIMIZATIONS: tuple[str, ...] = ("disable", "basic", "extended", "all")
BACKENDS: tuple[str, ...] = ("auto", "onnxruntime", "openvino")
PRECISIONS: tuple[str, ...] = ("f32", "bf16")
# The variant setting that lets runtime/engine/fastest.py choose backend, precision and variant.
FASTEST = "fastest"


@dataclass(frozen=True)
class EngineSettings:
    """How one model is loaded and served.

    ``backend``: the inference library that runs the graphs: ``onnxruntime`` (``auto``, the default) or ``openvino``
    (CPU only, the ``openvino`` extra; it runs the decoder as its two part files, which
    ``python -m export.openvino_decoder`` adds to a folder). ``precision``: OpenVINO's inference precision, ``f32``
    (exact) or ``bf16`` (on CPUs with AMX or AVX-512 BF16; elsewhere OpenVINO runs f32); ONNX Runtime has f32
    only. ``compile_cache_dir``: a folder where OpenVINO keeps compiled graphs, so a later load skips compiling
    (empty: off).
    ``provider``: ``auto`` takes CUDA when onnxruntime-gpu sees a GPU, CPU otherwise; ``cuda`` insists on it.
    ``variant``: which graph files to load, by transformers.js dtype (``fp32``, ``fp16``, ``int8``, ``uint8``,
    ``q8`` (``_quantized``), ``q4``, ``q4f16``, ``bnb4``), for every graph or per graph
    (``fp16,decoder_model_merged=q4``); see runtime/engine/variants.py. A graph without its file is a load error
    that lists the folder's files, unless ``variant_fallback`` loads fp32 instead (logged). ``fastest`` chooses
    backend, precision and variant from the CPU's features and the folder's files (runtime/engine/fastest.py).
    ``intra_op_threads`` / ``inter_op_threads``: 0 lets ONNX Runtime choose (one thread per physical core).
    ``io_binding``: keep the KV cache on the device between decoder steps; None turns it on with CUDA only.
    ``max_new_tokens`` and ``max_beams`` bound what a request may ask for; ``max_batch_size`` and
    ``batch_wait_ms`` bound the micro-batches: a batch closes when it is full or when its first request
    has waited ``batch_wait_ms``. ``admit_while_encoding``: requests that arrive while a batch is still encoding its
    images join it, up to ``max_batch_size``, and share its decoding (on a CPU each image takes seconds, so
    under load most requests arrive then); this delays the batch's first answers by the newcomers' image encoding.
    ``vision_batch_size``: images per vision-encoder run; 0 means 1 on a CPU, the whole batch on a GPU. On a CPU
    the vision encoder is compute-bound, so running a batch's images together saves no time and multiplies the
    activation memory (a batch of 8 large-model images holds gigabytes); the decoder steps stay batched.
    ``prepack_weights``: ONNX Runtime's CPU MatMul packs each weight matrix into its own layout once, at load. The
    packed copy replaces the parsed one: resident weights are 1.0x the file size either way (large fp32 model;
    the loader returns the freed copies). With it, creating a session briefly holds both copies; without it, the
    encoders run up to 4% slower and decoder steps at batch 8 about 1.5x slower.
    ``release_memory``: memory goes back to the system between graph runs instead of staying with the allocator
    that last used it, so that no graph holds memory while another runs: the vision and text encoders free their
    ONNX Runtime CPU arena at the end of each run (their activations: 0.7 GiB for one large-model image) and trim
    the C heap before it; the decoder, whose outputs are the KV cache, allocates outside the arena. Measured on
    the large fp32 model, one image then a batch of 8 through the text encoder and decoder: peak RSS 4.3 GiB
    instead of 5.1 GiB (3.07 GiB of weights); the vision and text encoders run about 3% slower (their activations
    are paged in again at each run), decoder steps no slower.
    """

    backend: BackendName = "auto"
    precision: Precision = "f32"
    compile_cache_dir: str = ""
    provider: Provider = "auto"
    device_id: int = 0
    variant: str = "fp32"
    variant_fallback: bool = False
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    graph_optimization: GraphOptimization = "all"
    io_binding: bool | None = None
    max_new_tokens: int = 1024
    max_beams: int = 5
    max_batch_size: int = 8
    batch_wait_ms: float = 5.0
    admit_while_encoding: bool = True
    vision_batch_size: int = 0
    prepack_weights: bool = True
    release_memory: bool = True
    warmup: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.provider not in PROVIDERS:
            problems.append(f"provider must be one of {', '.join(PROVIDERS)}, not {self.provider!r}")
        if self.backend not in BACKENDS:
            problems.append(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.backend == "openvino" and self.provider == "cuda":
            problems.append(
                "the openvino backend runs on the CPU; set the provider to auto or cpu, or the backend to auto"
            )
        if self.precision == "bf16" and self.backend != "openvino" and self.variant != FASTEST:
            problems.append("precision bf16 needs the openvino backend (ONNX Runtime's CPU provider has no bf16 path)")
        if self.variant != FASTEST:
            try:
                VariantChoice.parse(self.variant)
            except ValueError as exc:
                problems.append(f"{exc} (or {FASTEST})")
        if self.graph_optimization not in GRAPH_OPTIMIZATIONS:
            problems.append(
                f"graph_optimization must be one of {', '.join(GRAPH_OPTIMIZATIONS)}, not {self.graph_optimization!r}"
            )
        for name in ("intra_op_threads", "inter_op_threads", "device_id", "vision_batch_size"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        for name in ("max_new_tokens", "max_beams", "max_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.batch_wait_ms < 0:
            problems.append("batch_wait_ms must be >= 0")
        if problems:
            raise ValueError("invalid engine settings: " + "; ".join(problems))

    @cached_property
    def variant_choice(self) -> VariantChoice:
        if self.variant == FASTEST:
            raise ValueError("variant fastest is decided when the model folder is opened (runtime/engine/fastest.py)")
        return VariantChoice.parse(self.variant)
