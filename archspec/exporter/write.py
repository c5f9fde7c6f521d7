"""Saving an export: a self-contained file, or over 2 GB the graph plus one external data file
`<name>.<token>.data` (a fresh name each export, so a new pair never overwrites the data of the
old). Staging beside the output and the atomic commit are `archspec.files`' (`staging`, `commit`).

A self-contained file is streamed: the graph without its initializers, serialised by protobuf,
then the initializers, each a small protobuf header followed by the numpy array's own bytes. No
TensorProto holds a copy of the weights and no serialised copy of the whole model is built (on
ResNet-50 that was 3 copies of 100 MB at once)."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..files import make_public

if TYPE_CHECKING:
    import onnx

# protobuf cannot serialise a message over 2 GiB; keep a margin for the graph itself.
EXTERNAL_DATA_THRESHOLD = (1 << 31) - (1 << 26)

# Protobuf wire format (protobuf.dev/programming-guides/encoding): a length-delimited field is
# tag (field << 3 | 2), varint length, bytes. Field numbers from onnx.proto.
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(model: onnx.ModelProto, tensors: Mapping[str, Any], path: Path) -> Path | None:
    """Writes `model` (a graph without initializers) with `tensors` (name -> numpy array, in order)
    as its initializers to `path`, and over EXTERNAL_DATA_THRESHOLD their data beside it; returns
    the data file, if any."""
    if sum(a.nbytes for a in tensors.values()) <= EXTERNAL_DATA_THRESHOLD:
        with open(path, "wb") as fh:
            _stream(model, tensors, fh)
            fh.flush()
            os.fsync(fh.fileno())
        return None
    import onnx
    from onnx import numpy_helper

    model.graph.initializer.extend(numpy_helper.from_array(a, name) for name, a in tensors.items())
    location = f"{path.name}.{secrets.token_hex(4)}.data"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=1024, convert_attribute=False)
    data = path.with_name(location)
    make_public(data)  # onnx creates it private (0600); give it the model file's mode
    _fsync(data)
    _fsync(path)
    return data


def _stream(model: onnx.ModelProto, tensors: Mapping[str, Any], fh: BinaryIO) -> None:
    """The model's bytes, then one more `graph` field holding only the initializers: a parser merges
    a message field that occurs twice (protobuf.dev/programming-guides/encoding, "Last One Wins"
    for scalars, merged for messages), so the file reads as one graph with its initializers."""
    import numpy as np
    from onnx import TensorProto, helper

    if model.graph.initializer:
        raise ValueError("save() takes the initializers as `tensors`, not in the graph")
    fh.write(model.SerializeToString())
    parts = []
    for name, a in tensors.items():
        a = np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")  # raw_data is little-endian; 0-d stays 0-d
        head = TensorProto(name=name, dims=a.shape, data_type=helper.np_dtype_to_tensor_dtype(a.dtype))
        head_bytes = head.SerializeToString() + _key(_TENSOR_RAW_DATA) + _varint(a.nbytes)
        parts.append((_key(_GRAPH_INITIALIZER) + _varint(len(head_bytes) + a.nbytes) + head_bytes, a))
    fh.write(_key(_MODEL_GRAPH) + _varint(sum(len(h) + a.nbytes for h, a in parts)))
    for head_bytes, a in parts:
        fh.write(head_bytes)
        if a.nbytes:
            fh.write(a.reshape(-1).view(np.uint8).data)


def length_delimited(field: int, data: bytes) -> bytes:
    """One length-delimited protobuf field: key, varint length, bytes."""
    return _key(field) + _varint(len(data)) + data


def _key(field: int) -> bytes:
    return _varint(field << 3 | 2)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def external_data_files(model: Path) -> list[str]:
    """The external data locations an ONNX file names. A model over 64 MB holds its weights itself
    (archspec moves them out only when the graph proto stays small), so it is not parsed."""
    import onnx

    if model.stat().st_size > 1 << 26:
        return []
    proto = onnx.load(str(model), load_external_data=False)
    return sorted({e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"})


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())
