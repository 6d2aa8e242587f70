"""``python -m export.openvino_decoder MODEL_DIR``: the merged decoder's two parts, which OpenVINO compiles.

OpenVINO refuses the merged decoder (``CPU plug-in doesn't support If operation with dynamic rank``: the cached
branch returns encoder ``present`` tensors whose rank it cannot infer). The merged graph is one ``If`` node whose
branches are the decoder without past (first step) and with past (cached steps); each branch becomes a graph of
its own, ``decoder_model<suffix>.onnx`` and ``decoder_with_past_model<suffix>.onnx`` (the transformers.js layout):
the outer inputs a branch reads become its inputs, the cached part returns only the self-attention ``present``
tensors (the cross-attention ones never change after the first step, and its branch returns empty ones). The
weights stay where they are: the parts name the merged file's side file (``decoder_model_merged<suffix>.onnx_data``)
at the same offsets, so they add a few hundred KiB of graph, not a copy of the weights. A merged file with inline
weights gives parts with inline weights.

Torch-free (onnx only). The exporter writes the parts of every variant it exports; this command adds them to a
folder exported before, for every merged decoder in it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

import onnx
from onnx import GraphProto, ModelProto, helper

from export.errors import ExportError
from runtime.model_folder import DECODER, ONNX_DIR, VARIANTS, decoder_part_files, file_name

log = logging.getLogger("export")

_BRANCH_INPUT = "use_cache_branch"


def write_decoder_parts(onnx_dir: Path, dtype: str) -> tuple[Path, Path]:
    """Write ``dtype``'s two decoder parts beside its merged decoder in ``onnx_dir``; returns their paths."""
    merged_path = onnx_dir / file_name(DECODER, dtype)
    merged = onnx.load(str(merged_path), load_external_data=False)
    no_past, with_past = split_merged_decoder(merged)
    paths = tuple(onnx_dir / name for name in decoder_part_files(dtype))
    for model, path in zip((no_past, with_past), paths, strict=True):
        onnx.save(model, str(path))
    return paths[0], paths[1]


def split_merged_decoder(merged: ModelProto) -> tuple[ModelProto, ModelProto]:
    """The no-past and with-past graphs of a merged decoder (``merged`` loaded without its external data)."""
    graph = merged.graph
    if_nodes = [node for node in graph.node if node.op_type == "If"]
    if len(graph.node) != 1 or len(if_nodes) != 1 or if_nodes[0].input[0] != _BRANCH_INPUT:
        raise ExportError(
            f"{graph.name or 'the decoder'} is not a merged decoder (one If node on {_BRANCH_INPUT}); "
            "export the model again with python -m export"
        )
    (if_node,) = if_nodes
    branches = {a.name: a.g for a in if_node.attribute}
    outputs = list(if_node.output)
    self_outputs = [name for name in outputs if not (name.startswith("present.") and ".encoder." in name)]
    parts = (
        _branch_model(merged, branches["else_branch"], outputs, outputs, "decoder without past"),
        _branch_model(merged, branches["then_branch"], outputs, self_outputs, "decoder with past"),
    )
    return parts[0], parts[1]


def _branch_model(
    merged: ModelProto, branch: GraphProto, if_outputs: list[str], wanted: list[str], name: str
) -> ModelProto:
    outer = merged.graph
    # The If's outputs are its branch's outputs by position; the names inside the branch may differ.
    renames = dict(zip((o.name for o in branch.output), if_outputs, strict=True))
    wanted_inner = [inner for inner, out in renames.items() if out in wanted]
    nodes = _needed_nodes(branch.node, wanted_inner)
    used = {name for node in nodes for name in _node_inputs(node)}
    inputs = [i for i in outer.input if i.name in used and i.name != _BRANCH_INPUT]
    initializers = [t for t in outer.initializer if t.name in used]
    initializers += [t for t in branch.initializer if t.name in used]
    nodes = [_renamed(node, renames) for node in nodes]
    outer_outputs = {o.name: o for o in outer.output}
    branch_outputs = {renames[o.name]: o for o in branch.output}
    graph_outputs = []
    for out in wanted:
        info = onnx.ValueInfoProto()
        info.CopyFrom(branch_outputs[out] if branch_outputs[out].type.HasField("tensor_type") else outer_outputs[out])
        info.name = out
        graph_outputs.append(info)
    value_info = [v for v in branch.value_info if v.name not in renames]
    part = helper.make_graph(nodes, name, inputs, graph_outputs, initializers, value_info=value_info)
    model = helper.make_model(part, opset_imports=list(merged.opset_import), ir_version=merged.ir_version)
    model.producer_name = merged.producer_name
    model.producer_version = merged.producer_version
    for prop in merged.metadata_props:
        model.metadata_props.add(key=prop.key, value=prop.value)
    return model


def _needed_nodes(nodes: Iterable[onnx.NodeProto], wanted: list[str]) -> list[onnx.NodeProto]:
    """The nodes the ``wanted`` values depend on, in their order."""
    nodes = list(nodes)
    needed = set(wanted)
    keep = [False] * len(nodes)
    for index in range(len(nodes) - 1, -1, -1):
        node = nodes[index]
        if any(out in needed for out in node.output):
            keep[index] = True
            needed.update(_node_inputs(node))
    return [node for node, kept in zip(nodes, keep, strict=True) if kept]


def _node_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node reads, including those its subgraphs read from the enclosing scope."""
    names = {name for name in node.input if name}
    for attribute in node.attribute:
        for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
            for inner in sub.node:
                names.update(_node_inputs(inner))
    return names


def _renamed(node: onnx.NodeProto, renames: dict[str, str]) -> onnx.NodeProto:
    if not any(out in renames and renames[out] != out for out in node.output) and not any(
        name in renames and renames[name] != name for name in node.input
    ):
        return node
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.output[:] = [renames.get(out, out) for out in node.output]
    copy.input[:] = [renames.get(name, name) for name in node.input]
    return copy


def merged_variants(onnx_dir: Path) -> list[str]:
    """The variants whose merged decoder the folder holds."""
    return [dtype for dtype in VARIANTS if (onnx_dir / file_name(DECODER, dtype)).is_file()]


def add_decoder_parts(model_dir: Path, dtypes: Iterable[str] | None = None) -> list[Path]:
    """Write the decoder parts of ``dtypes`` (default: every merged decoder in the folder); updates the file
    list of ``export.json`` when there is one."""
    onnx_dir = model_dir / ONNX_DIR
    found = merged_variants(onnx_dir)
    if not found:
        raise ExportError(f"{onnx_dir} holds no merged decoder; export the model first (python -m export SOURCE)")
    chosen = list(dtypes) if dtypes else found
    missing = [d for d in chosen if d not in found]
    if missing:
        raise ExportError(f"{onnx_dir} has no merged decoder of {', '.join(missing)}; it has {', '.join(found)}")
    written: list[Path] = []
    for dtype in chosen:
        log.info("writing the decoder parts of %s", dtype)
        written += write_decoder_parts(onnx_dir, dtype)
    record_path = model_dir / "export.json"
    if record_path.is_file():
        from export import folder

        record = json.loads(record_path.read_text())
        record["files"] = folder.file_sizes(model_dir)
        folder.write_json(record_path, record)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.openvino_decoder", description=__doc__)
    parser.add_argument("model_dir", type=Path, help="an exported model folder")
    parser.add_argument("--dtype", action="append", choices=VARIANTS, help="only this variant (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        written = add_decoder_parts(args.model_dir, args.dtype)
    except ExportError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
