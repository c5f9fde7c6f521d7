"""Precision options for deployment: float16 (weights and activations in half precision) and int8
(onnxruntime's static quantization, calibrated on given or random inputs)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLOAT, HALF = 1, 10  # onnx.TensorProto.FLOAT, FLOAT16


def to_float16(model: Any, tensors: dict[str, Any], keep: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The initializers with every float32 one in float16 but those in `keep` (float32 arithmetic,
    `Emitter.exact`); every float32 graph input/output and value_info (the layers' outputs: data) of
    `model` becomes float16, in place. The emitted graphs hold no float constants elsewhere (no
    Constant nodes or float tensor attributes). Where onnxruntime has no float16 CPU kernel (GRU,
    LSTM), it inserts the casts itself."""
    import numpy as np

    graphs = [model.graph]
    while graphs:  # the model's graph and the control-flow bodies in it (a Scan's, say)
        graph = graphs.pop()
        for v in (*graph.input, *graph.output, *graph.value_info):
            if v.type.tensor_type.elem_type == FLOAT:
                v.type.tensor_type.elem_type = HALF
        graphs += [a.g for n in graph.node for a in n.attribute if a.HasField("g")]
    return {k: a.astype(np.float16) if a.dtype == np.float32 and k not in keep else a for k, a in tensors.items()}


@dataclass(frozen=True)
class Quantization:
    """What int8 quantization did, measured on the calibration inputs against the float32 model."""

    float_bytes: int
    int8_bytes: int
    samples: int  # calibration samples, also those the error is measured on
    source: str  # "random inputs" or "from N .npy files"
    max_abs_error: float  # max |int8 - float32| over the outputs
    max_rel_error: float  # max_abs_error / max(1, max |float32|)
    argmax_agreement: float  # share of samples whose output argmax (last axis) is unchanged

    def __str__(self) -> str:
        return (f"int8 (onnxruntime static QDQ, per-channel weights, calibrated on {self.samples} samples, {self.source}): "
                f"{self.float_bytes / 1e6:.2f} MB -> {self.int8_bytes / 1e6:.2f} MB; vs float32 on those samples: "
                f"max abs err {self.max_abs_error:.3g}, rel {self.max_rel_error:.3g}, "
                f"argmax agreement {100 * self.argmax_agreement:.1f}%")


def calibration_inputs(report: Any, shape: tuple[int, ...], files: Sequence[str | os.PathLike] | None,
                       samples: int = 32) -> tuple[list[Any], str]:
    """Batches of one sample: from `.npy` files (each one sample or a batch of the spec's input
    shape), else `samples` seeded random inputs."""
    import numpy as np

    from .errors import ExportError
    from .verify import example_input

    if not files:
        return [example_input(report, (1, *shape), seed=1000 + i) for i in range(samples)], "random inputs"
    batches, dtype = [], np.int64 if report.graph.input.dtype == "int64" else np.float32
    for f in files:
        try:
            a = np.load(os.fspath(f), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ExportError(f"cannot read calibration input {f}: {exc}") from None
        if tuple(a.shape) == shape:
            a = a[None]
        if tuple(a.shape[1:]) != shape:
            raise ExportError(f"calibration input {f} has shape {tuple(a.shape)}; expected {shape} or "
                              f"(N, {', '.join(map(str, shape))}) for input '{report.graph.input.name}'")
        batches += [a[i:i + 1].astype(dtype) for i in range(len(a))]
    return batches, f"from {len(files)} .npy file{'s' if len(files) > 1 else ''}"


def quantize_int8(float_path: Path, out_path: Path, report: Any, batches: list[Any], source: str) -> Quantization:
    """onnxruntime.quantization.quantize_static in QDQ format (int8 weights per channel, uint8
    activations, MinMax calibration): the form onnxruntime's CPU kernels fuse into integer convs and
    matmuls. Ops it cannot quantize (e.g. LSTM) stay float32, and so do the nodes that do not read the
    data (`index_arithmetic`)."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from ..runtime.session import Session
    from .verify import _without_float_data

    name = report.graph.input.name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict | None:
            x = next(self.it, None)
            return None if x is None else {name: x}

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's advice to pre-process goes to the root logger
    try:
        quantize_static(str(float_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        nodes_to_exclude=index_arithmetic(_without_float_data(float_path)))
    finally:
        root.setLevel(level)
    out = report.graph.output_name
    a, b = Session(float_path, device="cpu"), Session(out_path, device="cpu")
    want = np.concatenate([a.run({name: x})[out] for x in batches])
    got = np.concatenate([b.run({name: x})[out] for x in batches])
    err = float(np.abs(got.astype(np.float64) - want).max())
    agree = float((got.reshape(len(batches), -1, got.shape[-1]).argmax(-1)
                   == want.reshape(len(batches), -1, want.shape[-1]).argmax(-1)).mean())
    return Quantization(float_path.stat().st_size, out_path.stat().st_size, len(batches), source, err,
                        err / max(1.0, float(np.abs(want).max())), agree)


def index_arithmetic(model: Any) -> list[str]:
    """The nodes that do not read the data: every input an initializer, a Shape's output or another
    such node's output (upsample's source coordinates at a dynamic size, computed from sizes). The
    quantizer would quantize their floats as activations (it quantizes every Add and Mul), moving
    coordinates by a quantization step, and a function of sizes and constants gains nothing from it."""
    free = {t.name for t in model.graph.initializer}
    nodes = []
    for n in model.graph.node:  # in topological order
        if n.op_type == "Shape" or all(i in free for i in n.input if i):
            free.update(n.output)
            nodes.append(n.name)
    return nodes
