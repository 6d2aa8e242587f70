"""Bytes of the weights in a graph: what a decoder step must read from memory at least once.

Counted from the graph's initializers (shape times element size, external data or not, without loading the
data), in the main graph and in the branches of its ``If`` nodes (the merged decoder keeps shared weights in the
main graph; a name counted once is never counted again). Scalars and small constants are included: they are
weights too, and a rounding error at this scale.
"""

from __future__ import annotations

from pathlib import Path

from bench.artefacts import ONNX_GRAPHS, graph_path


def _element_size(data_type: int) -> int:
    from onnx import helper

    return helper.tensor_dtype_to_np_dtype(data_type).itemsize


def initializer_bytes(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    seen: set[str] = set()
    total = 0
    pending = [model.graph]
    while pending:
        graph = pending.pop()
        for tensor in graph.initializer:
            if tensor.name in seen:
                continue
            seen.add(tensor.name)
            count = 1
            for dim in tensor.dims:
                count *= dim
            total += count * _element_size(tensor.data_type)
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    pending.append(attr.g)
                pending.extend(attr.graphs)
    return total


def variant_weight_bytes(model_dir: Path, variant: str) -> dict[str, int]:
    """Initializer bytes of each graph of ``variant``, keyed by graph name."""
    return {graph: initializer_bytes(graph_path(model_dir, graph, variant)) for graph in ONNX_GRAPHS}
