"""One-input Concat nodes (copies the tracer leaves) are removed without changing what a graph computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from export.simplify import drop_single_input_concats


def _concat(source: str, result: str) -> onnx.NodeProto:
    return helper.make_node("Concat", [source], [result], axis=0)


def _graph_with_copies() -> onnx.ModelProto:
    """Copies read by a node, copies that are (branch) outputs, and one that passes an input straight out."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    flag = helper.make_tensor_value_info("flag", TensorProto.BOOL, [1])
    out = helper.make_tensor_value_info
    then_branch = helper.make_graph(
        [_concat("x", "x_copy"), helper.make_node("Relu", ["x_copy"], ["then_out"])],
        "then",
        [],
        [out("then_out", TensorProto.FLOAT, [2, 3])],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["negated"]), _concat("negated", "else_out")],
        "else",
        [],
        [out("else_out", TensorProto.FLOAT, [2, 3])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("If", ["flag"], ["branch"], then_branch=then_branch, else_branch=else_branch),
            helper.make_node("Abs", ["x"], ["absolute"]),
            _concat("absolute", "absolute_out"),
            helper.make_node("Sigmoid", ["absolute"], ["sigmoid"]),
            _concat("x", "passthrough"),
        ],
        "copies",
        [x, flag],
        [
            out("branch", TensorProto.FLOAT, [2, 3]),
            out("absolute_out", TensorProto.FLOAT, [2, 3]),
            out("sigmoid", TensorProto.FLOAT, [2, 3]),
            out("passthrough", TensorProto.FLOAT, [2, 3]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, flag: bool) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.array([[-1.0, 2.0, -3.0], [4.0, -5.0, 6.0]], dtype=np.float32)
    return session.run(None, {"x": x, "flag": np.array([flag])})


def _one_input_concats(graph: onnx.GraphProto) -> int:
    count = sum(1 for n in graph.node if n.op_type == "Concat" and len([i for i in n.input if i]) == 1)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                count += _one_input_concats(attribute.g)
    return count


def test_copies_are_removed_and_results_unchanged() -> None:
    model = _graph_with_copies()
    before = {flag: _run(model, flag) for flag in (True, False)}
    assert drop_single_input_concats(model) == 3
    onnx.checker.check_model(model)
    # The graph input passed straight to an output stays a distinct tensor.
    assert _one_input_concats(model.graph) == 1
    assert [o.name for o in model.graph.output] == ["branch", "absolute_out", "sigmoid", "passthrough"]
    for flag in (True, False):
        for got, expected in zip(_run(model, flag), before[flag], strict=True):
            np.testing.assert_array_equal(got, expected)


def test_the_export_has_no_copies_left(tiny_model_dir: Path) -> None:
    for path in sorted((tiny_model_dir / "onnx").glob("*.onnx")):
        assert _one_input_concats(onnx.load(str(path), load_external_data=False).graph) == 0, path.name
