"""An ONNX file's custom metadata (``metadata_props``), read without onnx or an inference session.

OpenVINO does not carry ONNX metadata into its models, and the engine reads the decoder's (the cross-attention
layout, runtime/model_folder.py CROSS_CACHE_KEY). The ModelProto's top-level fields are walked as protobuf wire
format; the graph (field 7, possibly gigabytes of inline weights) is skipped by seeking past it.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

_METADATA_PROPS = 14  # ModelProto.metadata_props: repeated StringStringEntryProto {key = 1, value = 2}
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def read_metadata(path: Path) -> dict[str, str]:
    """``{key: value}`` of the file's ``metadata_props``; ValueError when the file is not an ONNX model."""
    found: dict[str, str] = {}
    with path.open("rb") as stream:
        while (tag := _varint(stream, eof_ok=True)) is not None:
            field, wire = tag >> 3, tag & 7
            if wire == _VARINT:
                _varint(stream)
            elif wire == _I64:
                stream.seek(8, 1)
            elif wire == _I32:
                stream.seek(4, 1)
            elif wire == _LEN:
                size = _varint(stream)
                if field == _METADATA_PROPS:
                    key, value = _entry(stream.read(size))
                    found[key] = value
                else:
                    stream.seek(size, 1)
            else:
                raise ValueError(f"{path} is not an ONNX model (wire type {wire})")
    return found


def _entry(data: bytes) -> tuple[str, str]:
    fields: dict[int, str] = {}
    position = 0
    while position < len(data):
        tag, position = _varint_at(data, position)
        size, position = _varint_at(data, position)
        fields[tag >> 3] = data[position : position + size].decode("utf-8")
        position += size
    return fields.get(1, ""), fields.get(2, "")


def _varint(stream: BinaryIO, *, eof_ok: bool = False) -> int | None:
    result = shift = 0
    while True:
        byte = stream.read(1)
        if not byte:
            if eof_ok and shift == 0:
                return None
            raise ValueError("truncated ONNX file")
        result |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return result
        shift += 7


def _varint_at(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7
