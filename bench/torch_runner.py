"""The reference contender: PyTorch eager, transformers' own ``generate``, nothing tuned.

Stages are timed with forward hooks, so ``generate`` runs unmodified:
- the vision encoder from the vision tower's start to the projector's end;
- the text encoder from the BART encoder's start to its end;
- the first decoder step is the first call of the model's forward (the encoder output is already there);
- later steps are timed together, from the end of the first forward to the return of ``generate``.

EOS is ignored by ``min_new_tokens=max_new_tokens``: EOS cannot be chosen before the last token (where the
checkpoint's ``forced_eos_token_id`` forces it), so every run generates exactly ``max_new_tokens`` tokens, as the
engine does with ``ignore_eos``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import workload
from bench.measurement import Measurement, per_token
from bench.workload import Job


class _Clock:
    """Timestamps that forward hooks record during one ``generate``. On a GPU each mark first waits for the
    queued kernels, so that a stage's time is its own and not the launch time."""

    def __init__(self, synchronize: Any = None) -> None:
        self.marks: dict[str, list[float]] = {}
        self._synchronize = synchronize

    def reset(self) -> None:
        self.marks = {}

    def now(self) -> float:
        if self._synchronize is not None:
            self._synchronize()
        return time.perf_counter()

    def hook(self, name: str) -> Any:
        def record(*_: Any) -> None:
            self.marks.setdefault(name, []).append(self.now())

        return record

    def first(self, name: str) -> float:
        return self.marks[name][0]


class TorchRunner:
    def __init__(self, checkpoint: Path, threads: int = 0, device: str = "cpu", precision: str = "fp32") -> None:
        import torch
        from transformers import AutoProcessor, Florence2ForConditionalGeneration

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.device = torch.device(device)
        # bf16 as a user would load it: every weight and activation in bf16 (``dtype=torch.bfloat16``).
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        self.device_name = f"torch {self.device.type} {precision}"
        model = Florence2ForConditionalGeneration.from_pretrained(checkpoint, dtype=self.dtype)
        self.model = model.eval().to(self.device)
        self.processor = AutoProcessor.from_pretrained(checkpoint)
        self.image = workload.image()
        self.clock = _Clock(torch.cuda.synchronize if self.device.type == "cuda" else None)
        inner = self.model.model
        inner.vision_tower.register_forward_pre_hook(self.clock.hook("vision_start"))
        inner.multi_modal_projector.register_forward_hook(self.clock.hook("vision_end"))
        inner.language_model.encoder.register_forward_pre_hook(self.clock.hook("encoder_start"))
        inner.language_model.encoder.register_forward_hook(self.clock.hook("encoder_end"))
        self.model.register_forward_pre_hook(self.clock.hook("step_start"))
        self.model.register_forward_hook(self.clock.hook("step_end"))

    def warm_up(self) -> None:
        self.run(Job(max_new_tokens=2, num_beams=1))

    def run(self, job: Job) -> Measurement:
        self.clock.reset()
        started = time.perf_counter()
        inputs = self.processor(text=workload.TASK, images=self.image, return_tensors="pt").to(self.device)
        preprocessed = time.perf_counter()
        with self._torch.inference_mode():
            ids = self.model.generate(
                input_ids=inputs["input_ids"],
                pixel_values=inputs["pixel_values"].to(self.dtype),
                attention_mask=inputs.get("attention_mask"),
                max_new_tokens=job.max_new_tokens,
                min_new_tokens=job.max_new_tokens,
                num_beams=job.num_beams,
                do_sample=False,
            )
        generated = self.clock.now()
        text = self.processor.batch_decode(ids, skip_special_tokens=False)[0]
        self.processor.post_process_generation(text, task=workload.TASK, image_size=self.image.size)
        finished = time.perf_counter()

        clock = self.clock
        first_end = clock.first("step_end")
        new_tokens = int(ids.shape[1]) - 1  # the decoder start token is not generated
        stages = {
            "preprocess": preprocessed - started,
            "vision_encoder": clock.first("vision_end") - clock.first("vision_start"),
            "text_encoder": clock.first("encoder_end") - clock.first("encoder_start"),
            "first_decode": first_end - clock.first("step_start"),
            "per_token_decode": per_token(generated - first_end, new_tokens),
        }
        return Measurement(
            stages=stages,
            end_to_end=finished - started,
            new_tokens=new_tokens,
            prompt_tokens=int(inputs["input_ids"].shape[1]),
        )
