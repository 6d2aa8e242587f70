"""Which file of a model folder each graph is loaded from: transformers.js dtype suffixes, one variant per graph.

A variant is a transformers.js dtype and names files by its suffix (``decoder_model_merged_q4f16.onnx``). The
setting names one variant for every graph (``q4``) or one per graph, with an optional default for the graphs it
does not name (``fp16,decoder_model_merged=q4`` or ``vision_encoder=fp16,embed_tokens=fp32,...``), as
transformers.js's per-graph ``dtype`` object does. A graph file holds its weights inline or in
``<file>_data`` side files; ONNX Runtime reads either.

A graph without the chosen file is a load error that lists the variants the folder has for every graph, unless
fallback to fp32 is asked for (``EngineSettings.variant_fallback``). One layout rule is not a fallback: our
exporter's q4 variant kept the compute-bound graphs in their ``_int8`` files (runtime/model_folder.py
SHARED_GRAPHS), so q4 reads those where the folder has no ``_q4`` file for them. The decoder is
``decoder_model_merged``, or, in folders that have no merged file of the chosen variant, ``decoder_model`` with
``decoder_with_past_model``; a backend that cannot run the merged graph (OpenVINO) asks for the two parts only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from runtime.model_folder import (
    DECODER,
    GRAPHS,
    SHARED_GRAPHS,
    SUFFIXES,
    VARIANTS,
    decoder_part_files,
    file_name,
)


@dataclass(frozen=True)
class VariantChoice:
    """The variant of each graph."""

    default: str
    per_graph: tuple[tuple[str, str], ...] = ()

    def of(self, graph: str) -> str:
        return dict(self.per_graph).get(graph, self.default)

    @classmethod
    def parse(cls, text: str) -> VariantChoice:
        """``q4``, or ``[default,]graph=variant,...``; ValueError says what is wrong and what would be right."""
        default = None
        per_graph: dict[str, str] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            graph, sep, variant = (s.strip() for s in part.partition("="))
            if not sep:
                graph, variant = "", graph
            if variant not in SUFFIXES:
                raise ValueError(f"variant must be one of {', '.join(VARIANTS)} (or graph=variant), not {variant!r}")
            if not graph:
                if default is not None:
                    raise ValueError(f"variant {text!r} names two defaults; name one, then graph=variant pairs")
                default = variant
            elif graph not in GRAPHS:
                raise ValueError(f"variant {text!r} names the graph {graph!r}; graphs are {', '.join(GRAPHS)}")
            elif graph in per_graph:
                raise ValueError(f"variant {text!r} names {graph} twice")
            else:
                per_graph[graph] = variant
        if default is None and set(per_graph) != set(GRAPHS):
            missing = ", ".join(g for g in GRAPHS if g not in per_graph)
            raise ValueError(f"variant {text!r} leaves {missing} without a variant; add a default (e.g. fp32,...)")
        return cls(default or "fp32", tuple((g, per_graph[g]) for g in GRAPHS if g in per_graph))


@dataclass(frozen=True)
class GraphFiles:
    """The file(s) one graph is loaded from: one path, or for a split decoder (no past, with past)."""

    graph: str
    variant: str
    paths: tuple[Path, ...]

    @property
    def split(self) -> bool:
        return len(self.paths) == 2


class MissingVariant(LookupError):
    """The folder has no file of the chosen variant for a graph; the message lists what it has."""


class MissingDecoderParts(MissingVariant):
    """The folder has the merged decoder only, and the backend needs its two parts; the message says how to add
    them."""


def find_graph_files(
    onnx_dir: Path, graph: str, variant: str, *, fallback: bool = False, decoder_parts: bool = False
) -> tuple[GraphFiles, bool]:
    """The files of ``graph`` in ``variant``; with ``fallback``, the fp32 files when those are missing; with
    ``decoder_parts``, the decoder only as its two parts (for a backend that cannot run the merged graph).

    Returns the files and whether they are a fallback. Raises MissingVariant (no file, and no fallback),
    MissingDecoderParts (``decoder_parts``, and the folder has only the merged decoder) and FileNotFoundError
    (not even an fp32 file).
    """
    base, shared = SHARED_GRAPHS.get(variant, (variant, ()))
    if graph in shared and _files(onnx_dir, graph, variant) is None and _files(onnx_dir, graph, base) is not None:
        variant = base
    found = _files(onnx_dir, graph, variant, decoder_parts)
    if found is not None:
        return found, False
    if fallback and (fp32 := _files(onnx_dir, graph, "fp32", decoder_parts)) is not None:
        return fp32, True
    if not any(onnx_dir.glob("*.onnx")):
        raise FileNotFoundError(f"{onnx_dir} holds no ONNX graphs; export the model (`make export MODEL=... OUT=...`)")
    if decoder_parts and graph == DECODER and _files(onnx_dir, graph, variant) is not None:
        no_past, with_past = decoder_part_files(variant)
        raise MissingDecoderParts(
            f"{onnx_dir} has the merged decoder {file_name(DECODER, variant)} but not its two parts ({no_past}, "
            f"{with_past}), which OpenVINO needs (it cannot compile the merged graph); write them with: "
            f"python -m export.openvino_decoder {onnx_dir.parent}"
        )
    raise MissingVariant(
        f"{graph} has no {variant} file ({file_name(graph, variant)}) in {onnx_dir}; the folder has "
        f"{describe(available(onnx_dir))}. Choose a variant per graph from those "
        f"(FLORENCE_ENGINE_VARIANT=fp32,{graph}=...), or set FLORENCE_ENGINE_VARIANT_FALLBACK=1 to load fp32 instead"
    )


def available(onnx_dir: Path, *, decoder_parts: bool = False) -> dict[str, list[str]]:
    """Per graph, the variants the folder has files for (a split decoder counts when both of its files are there;
    with ``decoder_parts`` only those count for the decoder)."""
    return {graph: [v for v in VARIANTS if _files(onnx_dir, graph, v, decoder_parts) is not None] for graph in GRAPHS}


def describe(variants: Mapping[str, Iterable[str]]) -> str:
    return "; ".join(f"{graph}: {', '.join(found) or 'none'}" for graph, found in variants.items())


def _files(onnx_dir: Path, graph: str, variant: str, decoder_parts: bool = False) -> GraphFiles | None:
    path = onnx_dir / file_name(graph, variant)
    if path.is_file() and not (decoder_parts and graph == DECODER):
        return GraphFiles(graph, variant, (path,))
    if graph == DECODER:
        parts = tuple(onnx_dir / name for name in decoder_part_files(variant))
        if all(p.is_file() for p in parts):
            return GraphFiles(graph, variant, parts)
    return None
