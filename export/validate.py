"""Validation of an exported folder against the PyTorch model it came from.

Three checks, each raising ParityFailed with the graph and the difference:
- graph parity (fp32): every graph on random inputs with shapes other than the traced ones (dynamic axes), max
  abs difference within ``atol + rtol * max|reference|``;
- generation parity (fp32): greedy decoding through the ONNX graphs equals transformers ``generate`` token for
  token, for several task prompts in padded batches and at two image sizes (a sequence may part only at a near
  tie that float64 PyTorch arbitrates, see ``generation_parity``);
- variants (fp16, int8): every graph finite and close to the fp32 graph by cosine similarity on the same inputs;
  end-to-end first-step logits against PyTorch are reported.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from export import graphs
from export.errors import ParityFailed
from export.greedy import GenerationRules, GraphSession, decoder_shape, encode, generate, open_sessions, run
from runtime.model_folder import DECODER, file_name, past_names

if TYPE_CHECKING:
    from transformers import Florence2ForConditionalGeneration, Florence2Processor


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float

    def bound(self, reference: np.ndarray) -> float:
        return self.atol + self.rtol * float(np.abs(reference).max(initial=0.0))


# fp32 ONNX and PyTorch differ by summation order only. The tiny model (init std 0.5) is ill-conditioned: PyTorch
# fp32 itself is 2.7e-4 (relative to the output's max) away from PyTorch fp64 on its vision tower, and ONNX is
# closer to fp64 than that. A broken graph is off by O(1).
FP32_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-3)
# Minimum cosine similarity (per batch row) of each variant graph's outputs to the fp32 graph's on the same inputs.
# Measured on the tiny model, whose init std 0.5 makes it chaotic and the harshest case for reduced precision:
# fp16 vision 0.999, encoder 0.99997, decoder logits 0.99999; int8 vision 0.74-0.84 (by input; every quantised
# MatMul of its DaViT contributes), encoder 0.965-0.973, decoder logits 0.996-0.999. A broken graph scores near 0.
# End-to-end the tiny model amplifies these differences (first-step logits cosine ~0.9), which is why the bound
# is per graph.
VARIANT_MIN_COSINE: dict[str, dict[str, float]] = {
    "fp16": {"vision_encoder": 0.99, "embed_tokens": 0.999, "encoder_model": 0.99, DECODER: 0.99},
    "int8": {"vision_encoder": 0.5, "embed_tokens": 0.99, "encoder_model": 0.9, DECODER: 0.98},
    "q8": {"vision_encoder": 0.5, "embed_tokens": 0.99, "encoder_model": 0.9, DECODER: 0.98},  # int8
    # q4 reads the int8 files but its decoder (4-bit weights in blocks of 32): on Florence-2-large random weights
    # (Gaussian, the worst case for 4-bit rounding) decoder logits cosine 0.961-0.977 (int8: 0.999); tiny model 0.92.
    "q4": {"vision_encoder": 0.5, "embed_tokens": 0.99, "encoder_model": 0.9, DECODER: 0.85},
}

VALIDATION_TASKS: tuple[tuple[str, str], ...] = (
    ("<OD>", "<CAPTION_TO_PHRASE_GROUNDING>A green car parked in front of a yellow door"),
    ("<MORE_DETAILED_CAPTION>", "<REGION_TO_CATEGORY><loc_52><loc_332><loc_932><loc_774>"),
)
IMAGE_SIZES: tuple[int, ...] = (768, 384)
MAX_NEW_TOKENS = 24


@dataclass(frozen=True)
class Batch:
    """Prompts of one validation batch, in both layouts: ONNX (prompt only) and transformers (image tokens first)."""

    tasks: tuple[str, ...]
    pixel_values: torch.Tensor
    prompt_ids: torch.Tensor  # [B, S] "<s> prompt </s>" right-padded
    prompt_mask: torch.Tensor

    def hf_inputs(self, image_token_id: int) -> dict[str, torch.Tensor]:
        """transformers' layout: one ``<image>`` per image feature (H/32 * W/32 + 1), then the prompt."""
        batch = self.prompt_ids.shape[0]
        n_image = (self.pixel_values.shape[-2] // 32) * (self.pixel_values.shape[-1] // 32) + 1
        image_ids = torch.full((batch, n_image), image_token_id, dtype=torch.long)
        return {
            "input_ids": torch.cat([image_ids, self.prompt_ids], 1),
            "attention_mask": torch.cat([torch.ones(batch, n_image, dtype=torch.long), self.prompt_mask], 1),
            "pixel_values": self.pixel_values,
        }


def make_batch(processor: Florence2Processor, tasks: Sequence[str], image_size: int, seed: int) -> Batch:
    """Random images resized to ``image_size`` by the image processor; prompts built as the processor does."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (300 + 37 * i, 420, 3), dtype=np.uint8)) for i in range(len(tasks))]
    pixels = processor.image_processor(
        images, size={"height": image_size, "width": image_size}, return_tensors="pt"
    ).pixel_values
    tok = processor.tokenizer
    prompts = [tok.bos_token + p + tok.eos_token for p in processor._construct_prompts(list(tasks))]
    enc = tok(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
    return Batch(tuple(tasks), pixels, enc.input_ids, enc.attention_mask)


def rules_of(model: Florence2ForConditionalGeneration) -> GenerationRules:
    gc = model.generation_config
    return GenerationRules(
        decoder_start_token_id=gc.decoder_start_token_id,
        eos_token_id=gc.eos_token_id,
        pad_token_id=gc.pad_token_id,
        forced_bos_token_id=gc.forced_bos_token_id,
        forced_eos_token_id=gc.forced_eos_token_id,
        no_repeat_ngram_size=gc.no_repeat_ngram_size or 0,
    )


def validate_export(
    model: Florence2ForConditionalGeneration, checkpoint: Path, out: Path, dtypes: Sequence[str]
) -> dict[str, Any]:
    """Run every check on the folder ``out``; returns the figures that go into ``export.json``."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint)
    fp32 = open_sessions(out, "fp32")
    report: dict[str, Any] = {
        "fp32": {
            "graphs": graph_parity(model, fp32),
            "generation": generation_parity(model, processor, fp32),
        }
    }
    report.update(validate_variants(model, processor, fp32, out, [d for d in dtypes if d != "fp32"]))
    return report


def validate_variants(
    model: Florence2ForConditionalGeneration,
    processor: Florence2Processor,
    fp32: Mapping[str, GraphSession],
    out: Path,
    dtypes: Sequence[str],
) -> dict[str, Any]:
    """``variant_closeness`` and ``greedy_agreement`` of each variant in ``dtypes``, keyed by variant."""
    if not dtypes:
        return {}
    rules = rules_of(model)
    batch = make_batch(processor, VALIDATION_TASKS[0], IMAGE_SIZES[-1], seed=7)
    reference = reference_first_step_logits(model, batch, rules)
    report: dict[str, Any] = {}
    for dtype in dtypes:
        variant = open_sessions(out, dtype)
        report[dtype] = {
            **variant_closeness(fp32, variant, dtype, batch, rules, reference),
            "greedy_token_agreement_vs_fp32": greedy_agreement(fp32, variant, batch, rules, MAX_NEW_TOKENS),
        }
    return report


def greedy_agreement(
    fp32: Mapping[str, GraphSession],
    variant: Mapping[str, GraphSession],
    batch: Batch,
    rules: GenerationRules,
    max_new_tokens: int,
) -> float:
    """Share of greedy tokens the variant generates equal to fp32 ONNX's, up to each row's first difference
    (after it the two continue from different prefixes and agreement means nothing)."""
    want = onnx_generate(fp32, batch, rules, max_new_tokens)[:, 1:]
    got = onnx_generate(variant, batch, rules, max_new_tokens)[:, 1:]
    width = min(want.shape[1], got.shape[1])
    same = got[:, :width] == want[:, :width]
    agreed = np.where(same.all(1), width, same.argmin(1))
    return float(agreed.sum() / (want.shape[0] * want.shape[1]))


def _compare(graph: str, name: str, got: np.ndarray, want: torch.Tensor, tol: Tolerance) -> dict[str, float]:
    ref = want.detach().numpy()
    if got.shape != ref.shape:
        raise ParityFailed(graph, f"{name} has shape {list(got.shape)}, PyTorch gives {list(ref.shape)}")
    diff = float(np.abs(got.astype(np.float64) - ref).max(initial=0.0))
    bound = tol.bound(ref)
    if not diff <= bound:  # also catches NaN
        raise ParityFailed(graph, f"{name} max abs diff {diff:.3g} exceeds bound {bound:.3g}")
    return {"max_abs_diff": diff, "bound": bound}


def _worst(results: Sequence[dict[str, float]]) -> dict[str, float]:
    return max(results, key=lambda r: r["max_abs_diff"] / max(r["bound"], 1e-30))


def graph_parity(
    model: Florence2ForConditionalGeneration,
    sessions: Mapping[str, GraphSession],
    tol: Tolerance = FP32_TOLERANCE,
    seed: int = 1,
) -> dict[str, dict[str, float]]:
    """Each graph against its PyTorch module on random inputs; returns the worst difference per graph."""
    gen = torch.Generator().manual_seed(seed)
    dims = graphs.TextDims.of(model)
    report: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        vision = graphs.VisionEncoder(model)
        results = []
        for batch, size in ((1, 768), (3, 384)):
            pixels = torch.randn(batch, 3, size, size, generator=gen)
            got = run(sessions["vision_encoder"], {"pixel_values": pixels.numpy()})["image_features"]
            results.append(_compare("vision_encoder", f"image_features {size}x{size}", got, vision(pixels), tol))
        report["vision_encoder"] = _worst(results)

        ids = torch.randint(0, dims.vocab_size, (3, 11), generator=gen)
        got = run(sessions["embed_tokens"], {"input_ids": ids.numpy()})["inputs_embeds"]
        report["embed_tokens"] = _compare("embed_tokens", "inputs_embeds", got, graphs.EmbedTokens(model)(ids), tol)

        batch, enc_len = 3, 23
        embeds = torch.randn(batch, enc_len, dims.d_model, generator=gen)
        mask = torch.ones(batch, enc_len, dtype=torch.long)
        mask[1, -5:] = 0
        mask[2, -9:] = 0
        got = run(sessions["encoder_model"], {"inputs_embeds": embeds.numpy(), "attention_mask": mask.numpy()})
        want = graphs.Encoder(model)(embeds, mask)
        report["encoder_model"] = _compare("encoder_model", "last_hidden_state", got["last_hidden_state"], want, tol)

        report[DECODER] = _worst(_decoder_parity(model, sessions[DECODER], gen, tol))
    return report


def _decoder_parity(
    model: Florence2ForConditionalGeneration, decoder: GraphSession, gen: torch.Generator, tol: Tolerance
) -> list[dict[str, float]]:
    dims = graphs.TextDims.of(model)
    batch, enc_len, past_len = 3, 19, 5
    enc_states = torch.randn(batch, enc_len, dims.d_model, generator=gen)
    enc_mask = torch.ones(batch, enc_len, dtype=torch.long)
    enc_mask[0, -4:] = 0
    common = {"encoder_hidden_states": enc_states.numpy(), "encoder_attention_mask": enc_mask.numpy()}
    results = []
    for use_cache in (False, True):
        graph = f"decoder_model_merged (use_cache_branch={use_cache})"
        steps = 1 if use_cache else 4
        embeds = torch.randn(batch, steps, dims.d_model, generator=gen)
        past_shape = (batch, dims.heads, past_len if use_cache else 0, dims.head_dim)
        cross_shape = (batch, dims.heads, enc_len if use_cache else 0, dims.head_dim)
        past = [
            torch.randn(*(past_shape if ".decoder." in name else cross_shape), generator=gen)
            for name in past_names(dims.layers)
        ]
        feeds = {
            **common,
            "inputs_embeds": embeds.numpy(),
            "use_cache_branch": np.array([use_cache]),
            **{name: t.numpy() for name, t in zip(past_names(dims.layers), past, strict=True)},
        }
        got = run(decoder, feeds)
        module = graphs.Decoder(model, with_past=use_cache)
        want = module(embeds, enc_mask, enc_states, *(past if use_cache else ()))
        names = ["logits", *(n for n in past_names(dims.layers, "present") if not use_cache or ".decoder." in n)]
        for name, ref in zip(names, want, strict=True):
            results.append(_compare(graph, name, got[name], ref, tol))
    return results


def generation_parity(
    model: Florence2ForConditionalGeneration,
    processor: Florence2Processor,
    sessions: Mapping[str, GraphSession],
    tasks: Sequence[Sequence[str]] = VALIDATION_TASKS,
    sizes: Sequence[int] = IMAGE_SIZES,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> dict[str, Any]:
    """Greedy decoding through the graphs vs transformers ``generate``, token for token.

    A sequence may part from the reference only at a near tie: where PyTorch in float64 ranks the two candidate
    tokens closer than PyTorch's own float32 error at that step (or ranks the ONNX choice first). On the tiny model
    (init std 0.5) fp32 rounding alone moves deep-step logits by up to 0.3, and ONNX Runtime is the closer of the
    two to float64. Any other difference fails.
    """
    rules = rules_of(model)
    arbiter = _Float64Arbiter(model)
    sequences, exact, tokens, distinct, least_varied = 0, 0, 0, set(), None
    near_ties: list[dict[str, Any]] = []
    for size in sizes:
        for index, batch_tasks in enumerate(tasks):
            batch = make_batch(processor, batch_tasks, size, seed=size + index)
            onnx_ids = onnx_generate(sessions, batch, rules, max_new_tokens)
            hf_ids = hf_generate(model, batch, max_new_tokens)
            for row, task in enumerate(batch.tasks):
                got, want = onnx_ids[row].tolist(), hf_ids[row].tolist()
                sequences += 1
                tokens += len(want) - 1
                distinct.add(tuple(want))
                varied = len(set(want[1:]) - {rules.pad_token_id})
                least_varied = varied if least_varied is None else min(least_varied, varied)
                if got == want:
                    exact += 1
                    continue
                graph = f"greedy generation ({size}x{size})"
                first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
                if first is None:
                    raise ParityFailed(graph, f"{task!r} lengths differ: onnx {got} vs transformers {want}")
                margin, noise = arbiter.margin(batch, row, want[:first], want[first], got[first])
                if margin > noise:
                    raise ParityFailed(
                        graph,
                        f"{task!r} differs at position {first} (the decoder start is 0), where float64 PyTorch "
                        f"prefers {want[first]} over {got[first]} by {margin:.3g}, more than fp32 rounding moves "
                        f"the logits ({noise:.3g}): "
                        f"onnx {got} vs transformers {want}",
                    )
                near_ties.append(
                    {"task": task, "image_size": size, "position": first, "fp64_margin": margin, "fp32_noise": noise}
                )
    return {
        "sequences": sequences,
        "token_exact": exact,
        "near_tie_divergences": near_ties,
        "generated_tokens": tokens,
        "distinct_sequences": len(distinct),
        "min_distinct_tokens_per_sequence": least_varied,
        "image_sizes": list(sizes),
        "max_new_tokens": max_new_tokens,
    }


class _Float64Arbiter:
    """A float64 copy of the model, made on first use, that settles which of two tokens is ahead."""

    def __init__(self, model: Florence2ForConditionalGeneration) -> None:
        self._model = model
        self._wide: Florence2ForConditionalGeneration | None = None

    def margin(self, batch: Batch, row: int, prefix: list[int], chosen: int, other: int) -> tuple[float, float]:
        """(float64 logit of ``chosen`` minus ``other`` after ``prefix``, max |fp32 - fp64| over that logit row)."""
        if self._wide is None:
            self._wide = copy.deepcopy(self._model).double().eval()
        inputs = {k: v[row : row + 1] for k, v in batch.hf_inputs(self._model.config.image_token_id).items()}
        decoder_ids = torch.tensor([prefix])
        with torch.no_grad():
            narrow = self._model(**inputs, decoder_input_ids=decoder_ids).logits[0, -1].double()
            inputs["pixel_values"] = inputs["pixel_values"].double()
            wide = self._wide(**inputs, decoder_input_ids=decoder_ids).logits[0, -1]
        return float(wide[chosen] - wide[other]), float((narrow - wide).abs().max())


def onnx_generate(
    sessions: Mapping[str, GraphSession], batch: Batch, rules: GenerationRules, max_new_tokens: int
) -> np.ndarray:
    states, mask = encode(sessions, batch.pixel_values.numpy(), batch.prompt_ids.numpy(), batch.prompt_mask.numpy())
    return generate(sessions, states, mask, rules, max_new_tokens).tokens


def hf_generate(model: Florence2ForConditionalGeneration, batch: Batch, max_new_tokens: int) -> np.ndarray:
    inputs = batch.hf_inputs(model.config.image_token_id)
    with torch.no_grad():
        out = model.generate(**inputs, num_beams=1, do_sample=False, max_new_tokens=max_new_tokens)
    return out.numpy()


def variant_closeness(
    fp32: Mapping[str, GraphSession],
    variant: Mapping[str, GraphSession],
    dtype: str,
    batch: Batch,
    rules: GenerationRules,
    reference_logits: np.ndarray,
) -> dict[str, Any]:
    """Each graph of a variant against the fp32 graph on the same inputs (finite, cosine per batch row above the
    bound of VARIANT_MIN_COSINE), plus end-to-end first-step logits against PyTorch's ``reference_logits``
    (reported, not bounded)."""
    per_graph: dict[str, float] = {}
    for graph, feeds in _graph_feeds(fp32, batch, rules):
        want = run(fp32[graph], feeds)
        got = run(variant[graph], feeds)
        for name, value in got.items():
            if not np.isfinite(value).all():
                raise ParityFailed(file_name(graph, dtype).removesuffix(".onnx"), f"{name} holds NaN or inf")
        # cross-attention KV of the cached branch is empty by design; compare what carries data
        scores = [row_cosine(got[n], want[n]) for n in got if want[n].size]
        per_graph[graph] = min(per_graph.get(graph, 1.0), *scores)
        bound = VARIANT_MIN_COSINE[dtype][graph]
        if per_graph[graph] < bound:
            raise ParityFailed(
                file_name(graph, dtype).removesuffix(".onnx"),
                f"cosine to the fp32 graph {per_graph[graph]:.4f} below bound {bound}",
            )
    got_logits = first_step_logits(variant, batch, rules)
    want_logits = reference_logits
    return {
        "min_cosine_vs_fp32_graph": per_graph,
        "bounds": dict(VARIANT_MIN_COSINE[dtype]),
        "end_to_end_logits_cosine": row_cosine(got_logits, want_logits),
        "end_to_end_top1_agreement": float((got_logits.argmax(-1) == want_logits.argmax(-1)).mean()),
    }


def _graph_feeds(
    fp32: Mapping[str, GraphSession], batch: Batch, rules: GenerationRules
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Inputs for each graph as the fp32 pipeline produces them for ``batch``: image, prompt, encoder, two steps."""
    pixels, ids, mask = batch.pixel_values.numpy(), batch.prompt_ids.numpy(), batch.prompt_mask.numpy()
    features = run(fp32["vision_encoder"], {"pixel_values": pixels})["image_features"]
    embeds = run(fp32["embed_tokens"], {"input_ids": ids})["inputs_embeds"]
    enc_in = {
        "inputs_embeds": np.concatenate([features, embeds], 1),
        "attention_mask": np.concatenate([np.ones(features.shape[:2], np.int64), mask], 1),
    }
    states = run(fp32["encoder_model"], enc_in)["last_hidden_state"]
    layers, heads, head_dim = decoder_shape(fp32[DECODER])
    start = np.full((ids.shape[0], 1), rules.decoder_start_token_id, np.int64)
    empty = np.zeros((ids.shape[0], heads, 0, head_dim), np.float32)
    first = {
        "inputs_embeds": run(fp32["embed_tokens"], {"input_ids": start})["inputs_embeds"],
        "encoder_hidden_states": states,
        "encoder_attention_mask": enc_in["attention_mask"],
        "use_cache_branch": np.array([False]),
        **{name: empty for name in past_names(layers)},
    }
    presents = run(fp32[DECODER], first)
    second = {
        **first,
        "inputs_embeds": run(fp32["embed_tokens"], {"input_ids": np.full_like(start, rules.eos_token_id)})[
            "inputs_embeds"
        ],
        "use_cache_branch": np.array([True]),
        **{name: presents[name.replace("past_key_values", "present")] for name in past_names(layers)},
    }
    return [
        ("vision_encoder", {"pixel_values": pixels}),
        ("embed_tokens", {"input_ids": ids}),
        ("encoder_model", enc_in),
        (DECODER, first),
        (DECODER, second),
    ]


def first_step_logits(sessions: Mapping[str, GraphSession], batch: Batch, rules: GenerationRules) -> np.ndarray:
    """Logits ``[B, V]`` of the first decoder step through the ONNX graphs."""
    states, mask = encode(sessions, batch.pixel_values.numpy(), batch.prompt_ids.numpy(), batch.prompt_mask.numpy())
    return generate(sessions, states, mask, rules, max_new_tokens=1).logits[:, 0, :]


def reference_first_step_logits(
    model: Florence2ForConditionalGeneration, batch: Batch, rules: GenerationRules
) -> np.ndarray:
    inputs = batch.hf_inputs(model.config.image_token_id)
    start = torch.full((batch.prompt_ids.shape[0], 1), rules.decoder_start_token_id, dtype=torch.long)
    with torch.no_grad():
        return model(**inputs, decoder_input_ids=start).logits[:, 0, :].numpy()


def row_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest cosine similarity between matching batch rows (each row flattened)."""
    a64 = a.astype(np.float64).reshape(a.shape[0], -1)
    b64 = b.astype(np.float64).reshape(b.shape[0], -1)
    dots = (a64 * b64).sum(1)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return float((dots / np.maximum(norms, 1e-30)).min())
