"""Which file of a model folder each graph is loaded from: transformers.js dtype suffixes, one variant per graph.

A variant is a transformers.js dtype and names files by its suffix (``decoder_model_merged_q4f16.onnx``). The
setting names one variant for every graph (``q4``) or one per graph, with an optional default for the graphs it
does not name (``fp16,decoder_model_merged=q4`` or ``vision_encoder=fp16,embed_tokens=fp32,...``), as
transformers.js's per-graph ``dtype`` object does. A graph file holds its weights inline or in
``<file>_data`` side files; ONNX Runtime reads either.

A graph without the chosen file is a load error that lists the variants the folder has for every graph, unless
fallback to fp32 is asked for (``EngineSettings.variant_fallback``). One layout rule is not a fallback: our
exporter's q4 variant kept the compute-bound graphs in their ``_int8`` files (export/layout.py SHARED_GRAPHS), so
q4 reads those where the folder has no ``_q4`` file for them. The decoder is ``decoder_model_merged``, or, in
folders that have no merged file of the chosen variant, ``decoder_model`` with ``decoder_with_past_model``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

VISION_ENCODER = "vision_encoder"
EMBED_TOKENS = "embed_tokens"
ENCODER = "encoder_model"
DECODER = "decoder_model_merged"
GRAPHS: tuple[str, ...] = (VISION_ENCODER, EMBED_TOKENS, ENCODER, DECODER)
# The two graphs a merged decoder is made of: the first step without past, the later steps with it.
DECODER_NO_PAST = "decoder_model"
DECODER_WITH_PAST = "decoder_with_past_model"

# transformers.js's DEFAULT_DTYPE_SUFFIX_MAPPING: dtype -> file suffix.
SUFFIXES: Mapping[str, str] = {
    "fp32": "",
    "fp16": "_fp16",
    "int8": "_int8",
    "uint8": "_uint8",
    "q8": "_quantized",
    "q4": "_q4",
    "q4f16": "_q4f16",
    "bnb4": "_bnb4",
}
VARIANTS: tuple[str, ...] = tuple(SUFFIXES)
# See the module docstring: the compute-bound graphs of our q4 folders are in their int8 files.
_SHARED: Mapping[str, tuple[str, tuple[str, ...]]] = {"q4": ("int8", (VISION_ENCODER, EMBED_TOKENS, ENCODER))}


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


def find_graph_files(onnx_dir: Path, graph: str, variant: str, *, fallback: bool = False) -> tuple[GraphFiles, bool]:
    """The files of ``graph`` in ``variant``; with ``fallback``, the fp32 files when those are missing.

    Returns the files and whether they are a fallback. Raises MissingVariant (no file, and no fallback) and
    FileNotFoundError (not even an fp32 file).
    """
    base, shared = _SHARED.get(variant, (variant, ()))
    if graph in shared and _files(onnx_dir, graph, variant) is None and _files(onnx_dir, graph, base) is not None:
        variant = base
    found = _files(onnx_dir, graph, variant)
    if found is not None:
        return found, False
    if fallback and (fp32 := _files(onnx_dir, graph, "fp32")) is not None:
        return fp32, True
    if not any(onnx_dir.glob("*.onnx")):
        raise FileNotFoundError(f"{onnx_dir} holds no ONNX graphs; export the model (`make export MODEL=... OUT=...`)")
    raise MissingVariant(
        f"{graph} has no {variant} file ({graph}{SUFFIXES[variant]}.onnx) in {onnx_dir}; the folder has "
        f"{describe(available(onnx_dir))}. Choose a variant per graph from those "
        f"(FLORENCE_ENGINE_VARIANT=fp32,{graph}=...), or set FLORENCE_ENGINE_VARIANT_FALLBACK=1 to load fp32 instead"
    )


def available(onnx_dir: Path) -> dict[str, list[str]]:
    """Per graph, the variants the folder has files for (a split decoder counts when both of its files are there)."""
    return {graph: [v for v in VARIANTS if _files(onnx_dir, graph, v) is not None] for graph in GRAPHS}


def describe(variants: Mapping[str, Iterable[str]]) -> str:
    return "; ".join(f"{graph}: {', '.join(found) or 'none'}" for graph, found in variants.items())


def _files(onnx_dir: Path, graph: str, variant: str) -> GraphFiles | None:
    suffix = SUFFIXES[variant]
    path = onnx_dir / f"{graph}{suffix}.onnx"
    if path.is_file():
        return GraphFiles(graph, variant, (path,))
    if graph == DECODER:
        parts = (onnx_dir / f"{DECODER_NO_PAST}{suffix}.onnx", onnx_dir / f"{DECODER_WITH_PAST}{suffix}.onnx")
        if all(p.is_file() for p in parts):
            return GraphFiles(graph, variant, parts)
    return None
