"""Saving an export: a self-contained file, or over 2 GB the graph plus one external data file
`<name>.<token>.data` (a fresh name each export, so a new pair never overwrites the data of the
old). Staging beside the output and the atomic commit are `archspec.files`' (`staging`, `commit`)."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from ..files import make_public

if TYPE_CHECKING:
    import onnx

# protobuf cannot serialise a message over 2 GiB; keep a margin for the graph itself.
EXTERNAL_DATA_THRESHOLD = (1 << 31) - (1 << 26)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _initializer_bytes(model: onnx.ModelProto) -> int:
    import numpy as np
    from onnx import helper

    total = 0
    for t in model.graph.initializer:
        n = 1
        for d in t.dims:
            n *= d
        try:
            total += n * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        except (KeyError, TypeError, ValueError):
            total += len(t.raw_data)
    return total


def save(model: onnx.ModelProto, path: Path) -> Path | None:
    """Writes `model` to `path` (and its external data beside it, over EXTERNAL_DATA_THRESHOLD);
    returns the data file, if any."""
    import onnx

    if _initializer_bytes(model) <= EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(model, str(path))
        _fsync(path)
        return None
    location = f"{path.name}.{secrets.token_hex(4)}.data"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=1024, convert_attribute=False)
    data = path.with_name(location)
    make_public(data)  # onnx creates it private (0600); give it the model file's mode
    _fsync(data)
    _fsync(path)
    return data


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
