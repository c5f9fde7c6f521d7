"""The serving contract of an exported model: each input's and output's name, datatype and shape,
read from the ONNX file itself (so N inputs and outputs come out as they were exported).

Shared by the Triton repository writer (`triton.py`) and the Open Inference Protocol server
(`serve/`). Datatype names are the KServe v2 / Open Inference Protocol ones ("FP32", "INT64");
Triton's `config.pbtxt` spells them with a `TYPE_` prefix. A symbolic ONNX axis (`dim_param`, or
none) is -1, as both protocols write it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ArchspecError

if TYPE_CHECKING:
    import onnx

# ONNX TensorProto element type -> (Open Inference Protocol datatype, numpy dtype name).
# Source: onnx/onnx.proto3 `TensorProto.DataType`; kserve open-inference-protocol "Tensor Data Types".
DATATYPES: dict[int, tuple[str, str]] = {
    1: ("FP32", "float32"), 2: ("UINT8", "uint8"), 3: ("INT8", "int8"), 4: ("UINT16", "uint16"),
    5: ("INT16", "int16"), 6: ("INT32", "int32"), 7: ("INT64", "int64"), 9: ("BOOL", "bool"),
    10: ("FP16", "float16"), 11: ("FP64", "float64"), 12: ("UINT32", "uint32"), 13: ("UINT64", "uint64"),
}


class ContractError(ArchspecError):
    """The model's inputs or outputs cannot be served as declared (an unsupported dtype, say)."""


@dataclass(frozen=True)
class Tensor:
    """One input or output: shape with the batch axis first when the model is batched; -1 = symbolic."""

    name: str
    datatype: str  # Open Inference Protocol name, e.g. "FP32"
    dtype: str  # numpy name, e.g. "float32"
    shape: tuple[int, ...]
    axis_names: tuple[str, ...]  # the ONNX dim_param of each axis ("" when fixed)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape without the batch axis (Triton's `dims` when max_batch_size > 0)."""
        return self.shape[1:]


@dataclass(frozen=True)
class Contract:
    name: str  # the model's name (the spec's), as served and as Triton's folder
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    batched: bool  # axis 0 of every input and output is symbolic: requests may be stacked on it

    def input(self, name: str) -> Tensor | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> Tensor | None:
        return next((t for t in self.outputs if t.name == name), None)


def read_contract(model: str | os.PathLike | bytes, name: str | None = None) -> Contract:
    """The contract of an ONNX file (or its bytes); `name` defaults to the archspec spec name stored
    in the model's metadata, else the graph's name."""
    import onnx

    try:
        proto = onnx.load_from_string(model) if isinstance(model, bytes) else \
            onnx.load(os.fspath(model), load_external_data=False)
    except Exception as exc:  # a truncated or non-ONNX file
        raise ContractError(f"cannot read {'the model' if isinstance(model, bytes) else model} as ONNX: "
                            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") \
            from None
    return contract_of(proto, name)


def contract_of(proto: "onnx.ModelProto", name: str | None = None) -> Contract:
    meta = {p.key: p.value for p in proto.metadata_props}
    initializers = {t.name for t in proto.graph.initializer}
    inputs = tuple(_tensor(v) for v in proto.graph.input if v.name not in initializers)
    outputs = tuple(_tensor(v) for v in proto.graph.output)
    if not inputs or not outputs:
        raise ContractError("the model has no graph inputs or no outputs; nothing to serve")
    batched = all(t.shape and t.axis_names[0] for t in inputs + outputs)
    return Contract(name or meta.get("archspec.spec") or proto.graph.name or "model", inputs, outputs, batched)


def _tensor(value: "onnx.ValueInfoProto") -> Tensor:
    tt = value.type.tensor_type
    if not value.type.HasField("tensor_type"):
        raise ContractError(f"'{value.name}' is not a tensor; only tensor inputs and outputs can be served")
    if tt.elem_type not in DATATYPES:
        raise ContractError(f"'{value.name}' has ONNX element type {tt.elem_type}, which archspec does not serve "
                            f"(supported: {', '.join(d for d, _ in DATATYPES.values())})")
    datatype, dtype = DATATYPES[tt.elem_type]
    dims = list(tt.shape.dim) if tt.HasField("shape") else []
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
    names = tuple(d.dim_param if d.HasField("dim_param") else ("?" if not d.HasField("dim_value") else "")
                  for d in dims)
    return Tensor(value.name, datatype, dtype, shape, names)
