"""Graph clean-ups the tracer leaves for ONNX Runtime to pay for at every run.

transformers' KV cache appends new keys to an empty tensor (``torch.cat([empty, key])``); constant folding drops
the empty operand and leaves a one-input ``Concat``, which ONNX Runtime executes as a full copy. In the decoder
with past, 24 of them copy the whole cross-attention cache at every step: on the large model at 8 requests x 3
beams, 59 ms of a 148 ms step. ``drop_single_input_concats`` removes them, in ``If`` subgraphs too.
"""

from __future__ import annotations

import onnx


def drop_single_input_concats(model: onnx.ModelProto) -> int:
    """Remove one-input ``Concat`` nodes from ``model`` (in place); returns how many were removed."""
    return _simplify(model.graph)


def _simplify(graph: onnx.GraphProto) -> int:
    removed = 0
    produced = {out for node in graph.node for out in node.output}
    outputs = {value.name for value in graph.output}
    for node in list(graph.node):
        inputs = [name for name in node.input if name]
        if node.op_type != "Concat" or len(inputs) != 1:
            continue
        (source,), (result,) = inputs, node.output
        if result not in outputs:
            # Readers of the copy read the original instead (a graph input, an outer-scope value or a node's).
            graph.node.remove(node)
            _rename_uses(graph, result, source)
        elif source in produced and source not in outputs:
            # The copy is a graph output: the node that made the original writes the output directly.
            graph.node.remove(node)
            _rename_uses(graph, source, result)
            for producer in graph.node:
                producer.output[:] = [result if out == source else out for out in producer.output]
        else:
            continue  # the output must stay a distinct tensor (an input passed through, or output twice)
        removed += 1
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                removed += _simplify(attribute.g)
            for sub in attribute.graphs:
                removed += _simplify(sub)
    return removed


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every read of ``old`` in ``graph`` and its subgraphs (which may read outer-scope values) reads ``new``."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rename_uses(attribute.g, old, new)
            for sub in attribute.graphs:
                _rename_uses(sub, old, new)
