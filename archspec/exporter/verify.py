"""Verification of an emitted model, before it is committed:

1. `onnx.checker.check_model(full_check=True)` (which includes strict shape inference);
2. each dynamic axis is symbolic (`dim_param`) in the graph input, each fixed axis concrete;
3. ONNX shape inference of the output agrees with archspec's checker: fixed axes equal, dynamic
   axes symbolic;
4. differential, when torch is installed: the module `lower` builds and onnxruntime on the emitted
   graph are two independent lowerings of the same spec, run on the same weights and inputs at
   two sizes of every dynamic axis, every output compared. The criterion, float32:
   max|ort - torch| <= 1e-5 * max(1, max|torch|) (relative to the output's magnitude, floored at 1
   so near-zero outputs are held to 1e-5 absolute). Without torch, numeric verification is skipped
   (and said so); onnxruntime still runs at both sizes, giving finite outputs of archspec's shapes.
   A layer that normalises by a sample's own statistics (layer, group, instance norm) is not
   well-conditioned in float32: rounding the mean of a row to float32 moves every output of the row
   by up to ulp(mean) / 2 / sqrt(var + eps), past 1e-5 where the row's spread is small against its
   mean, in PyTorch and onnxruntime alike (measured: rows of mean 100 and spread 1e-2 differ from
   float64 by 8e-4 in PyTorch, 4e-4 in onnxruntime; not the emission's doing). Where, in a model
   with such a layer, onnxruntime and PyTorch float32 differ by more than the criterion, the module
   is run in float64 (the weights read again: only then, as it doubles the reference's time) and
   onnxruntime passes when it is within 1e-5 * max(1, max|torch|) as close to the float64 result as
   PyTorch float32 is: max|ort - t64| - max|torch - t64|, the error onnxruntime adds, is what is
   recorded and held to the tolerance.

The export computes PyTorch's outputs first (`torch_outputs`), then frees the weights, then runs
1-4 on the file: the checker and onnxruntime each parse their own copy of the weights from it,
so at most one copy of the weights is in memory at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..analyze import Report
from ..layers import REGISTRY
from .errors import ExportError
from .plan import Plan

TOLERANCE = {"float32": 1e-5, "float16": 1e-2}  # relative to max(1, max|torch output|), see above


@dataclass(frozen=True)
class Verification:
    """One run at one input size: onnxruntime vs PyTorch (or onnxruntime alone, reference None)."""

    input_shapes: tuple[tuple[int, ...], ...]  # every input's, with the batch axis
    output_shapes: tuple[tuple[int, ...], ...]  # every output's
    max_abs_error: float  # max |ort - torch| (of the output with the largest relative error); nan: no reference
    max_rel_error: float  # max |ort - torch| / max(1, max |torch|) over every output; must be <= tolerance
    reference_max: float  # max |torch|
    reference: str = ""  # how PyTorch computed, when not in the model's own dtype

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.input_shapes[0]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.output_shapes[0]

    @property
    def compared(self) -> bool:
        return self.max_abs_error == self.max_abs_error  # not nan

    def __str__(self) -> str:
        def dims(shapes: tuple[tuple[int, ...], ...]) -> str:
            return ", ".join("x".join(map(str, shape)) for shape in shapes)

        shapes = f"{dims(self.input_shapes)} -> {dims(self.output_shapes)}"  # every input and output, in order
        if not self.compared:
            return f"{shapes}: onnxruntime ran, outputs finite (no PyTorch reference)"
        how = f" (PyTorch {self.reference})" if self.reference else ""
        return f"{shapes}: max abs err {self.max_abs_error:.2e}, rel {self.max_rel_error:.2e}{how}"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def check_structure(path: Path, report: Report, plan: Plan) -> None:
    """Steps 1-3, on the file as written."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected the exported model of '{report.graph.name}': {first_line(exc)}") \
            from exc
    model = _without_float_data(path)
    _check_input_axes(model, report, plan)
    _check_output_shape(model, report, plan)


_FLOATS = (1, 10)  # onnx.TensorProto.FLOAT, FLOAT16
_VALUES = (4, 5, 9)  # TensorProto's float_data, int32_data (float16 values), raw_data


def _without_float_data(path: Path) -> Any:
    """The model in `path` read without its float initializers' values (the bytes are skipped, not
    parsed): shape inference reads an initializer's type and dims, and the values of integer ones
    only (data propagation through shape and axes inputs), so it need not load the weights.
    Protobuf wire format: protobuf.dev/programming-guides/encoding; field numbers from onnx.proto
    (ModelProto.graph 7, GraphProto.initializer 5, TensorProto.data_type 2)."""
    import mmap

    import onnx

    from .write import length_delimited

    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        model = bytearray()
        for field, start, value, end in _fields(buf, 0, len(buf)):
            if field != (7, 2):
                model += buf[start:end]
                continue
            graph = bytearray()
            for f, s, v, e in _fields(buf, value, end):
                if f != (5, 2):
                    graph += buf[s:e]
                    continue
                tensor = list(_fields(buf, v, e))
                dtype = next((_varint(buf, tv)[0] for tf, _, tv, _ in tensor if tf == (2, 0)), None)
                kept = b"".join(buf[ts:te] for tf, ts, _, te in tensor if dtype not in _FLOATS or tf[0] not in _VALUES)
                graph += length_delimited(5, kept)
            model += length_delimited(7, bytes(graph))
    return onnx.ModelProto.FromString(bytes(model))


def _fields(buf: Any, pos: int, end: int) -> Any:
    """((field number, wire type), start, value start, end) of each field of the message in buf[pos:end]."""
    while pos < end:
        key, value = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            stop = _varint(buf, value)[1]
        elif wire == 1:
            stop = value + 8
        elif wire == 5:
            stop = value + 4
        elif wire == 2:
            size, value = _varint(buf, value)
            stop = value + size
        else:
            raise ExportError(f"unexpected protobuf wire type {wire} in the exported file")
        yield (field, wire), pos, value, stop
        pos = stop


def _varint(buf: Any, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    n, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return n, pos
        shift += 7


def _dims(value_info: Any) -> list[int | str | None]:
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param if d.HasField("dim_param") else None)
            for d in tt.shape.dim]


def _check_input_axes(model: Any, report: Report, plan: Plan) -> None:
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    names = [i.name for i in report.graph.inputs]
    if [i.name for i in inputs] != names:
        raise ExportError(f"exported model has inputs {[i.name for i in inputs]}, expected {names}")
    for k, (value, inp) in enumerate(zip(inputs, report.graph.inputs)):
        dims, expected = _dims(value), plan.input_dims(k)
        if len(dims) != len(expected):
            raise ExportError(f"exported input '{inp.name}' has rank {len(dims)}, expected {len(expected)}")
        bad = [f"axis {i}: {d!r} (expected {'symbolic ' + repr(e) if isinstance(e, str) else e})"
               for i, (d, e) in enumerate(zip(dims, expected))
               if (isinstance(e, str) and not isinstance(d, str)) or (isinstance(e, int) and d != e)]
        if bad:
            raise ExportError(f"the exported input '{inp.name}' is not as declared: " + "; ".join(bad))


def _check_output_shape(model: Any, report: Report, plan: Plan) -> None:
    """ONNX shape inference (strict, with data propagation) vs archspec's checker, every output."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise ExportError(f"ONNX shape inference failed on the exported '{report.graph.name}': {first_line(exc)}") \
            from exc
    outs = list(inferred.graph.output)
    names = [o.name for o in report.graph.outputs]
    if [o.name for o in outs] != names:
        raise ExportError(f"exported model has outputs {[o.name for o in outs]}, expected {names}")
    for value, (name, t), axes, expected in zip(outs, report.outputs.items(), plan.output_axes, plan.runs[0].outputs):
        dims = _dims(value)
        if len(dims) != len(expected):
            raise ExportError(f"ONNX shape inference gives output '{name}' rank {len(dims)} {dims}, archspec "
                              f"check says {len(expected)} (batch + {t})")
        bad = []
        for j, (d, e) in enumerate(zip(dims, expected)):
            if j in axes:
                if not isinstance(d, str):
                    bad.append(f"axis {j} should be dynamic ({axes[j]}) but is {d!r}")
            elif d != e:
                bad.append(f"axis {j} is {d!r}, archspec check says {e}")
        if bad:
            raise ExportError(f"ONNX shape inference disagrees with archspec check on output '{name}': "
                              + "; ".join(bad))


def example_input(report: Report, shape: tuple[int, ...], seed: int = 0, index: int = 0) -> Any:
    """A seeded numpy input for input `index`: N(0, 1) floats, or token ids below every embedding's vocabulary."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if report.graph.inputs[index].dtype == "int64":
        return rng.integers(0, vocab_size(report), shape, dtype=np.int64)
    return rng.standard_normal(shape, dtype=np.float32)


def example_inputs(report: Report, shapes: tuple[tuple[int, ...], ...], seed: int = 0) -> tuple[Any, ...]:
    """One seeded input per model input, of the given shapes (batch included)."""
    return tuple(example_input(report, s, seed + 1000 * k, k) for k, s in enumerate(shapes))


def vocab_size(report: Report) -> int:
    """Token ids must index every embedding: the smallest vocabulary; 2 when there is none."""
    return min((int(n.params.vocab) for n in report.graph.nodes if n.kind == "embedding"), default=2)


def passive_openmp() -> None:
    """For a process that imports torch only to verify: OpenMP workers that sleep between parallel
    regions instead of spinning (OMP_WAIT_POLICY, read once when torch loads; a user's setting
    wins). On a shared 2-core machine spinning workers made the verification's two ResNet-50
    forwards 4-10x slower (tools/bench_export.py --omp)."""
    import os
    import sys

    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def torch_reference(report: Report, weights: Mapping[str, Any], dtype: str = "float32") -> Any:
    """The module `lower` builds, holding `weights` (no copy, no initialisation: built on the meta
    device, then the arrays assigned); None when torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    from ..lower import build_module

    module = build_module(report, device="meta")
    state = {k: torch.from_numpy(v) for k, v in weights.items()}
    module.load_state_dict(state, strict=True, assign=True)
    module.eval()
    if dtype == "float16":
        module = module.half()
    return module


@dataclass(frozen=True)
class Reference:
    """PyTorch's outputs at one planned size, and how it computed them."""

    outputs: list[Any]
    how: str = ""


Exact = Callable[[], list[list[Any]]]  # PyTorch's outputs in float64 at every planned size, on demand


def torch_outputs(report: Report, weights: Mapping[str, Any], plan: Plan,
                  dtype: str = "float32") -> list[Reference] | None:
    """Step 4's reference: the module's outputs at every planned size, computed before onnxruntime
    loads the model, so the module and the weights it shares can be freed first (one copy of the
    weights in memory at a time); None when torch is not installed."""
    module = torch_reference(report, weights, dtype)
    if module is None:
        return None
    refs: list[Reference] = []
    for k in range(len(plan.runs)):  # a module that fell back to float32 stays there
        refs.append(Reference(*_torch_run(module, _inputs(report, plan, k, dtype), in_float32=bool(refs and refs[-1].how))))
    return refs


def conditioned(report: Report) -> bool:
    """Whether a layer normalises by a sample's own statistics: its float32 error is not bounded
    by 1e-5 (see the module doc), so a float64 reference decides."""
    return any(REGISTRY[n.kind].sample_statistics for n in report.graph.nodes)


def exact_outputs(report: Report, weights: Mapping[str, Any], plan: Plan) -> list[list[Any]]:
    """The module in float64 (new tensors; `weights` stay float32) at every planned size, on the
    float32 inputs widened: what a float32 result is measured against."""
    module = torch_reference(report, weights).double()
    return [_torch_run(module, tuple(x.astype("float64") if x.dtype.kind == "f" else x
                                     for x in _inputs(report, plan, k, "float32")))[0] for k in range(len(plan.runs))]


def _inputs(report: Report, plan: Plan, k: int, dtype: str) -> tuple[Any, ...]:
    """The inputs of planned size `k`, the same for PyTorch and onnxruntime."""
    import numpy as np

    xs = example_inputs(report, plan.runs[k].inputs, seed=100 + k)
    if dtype == "float16":
        xs = tuple(x.astype(np.float16) if x.dtype == np.float32 else x for x in xs)
    return xs


def check_numerics(path: Path, references: list[Reference] | None, report: Report, plan: Plan,
                   dtype: str = "float32", exact: Exact | None = None) -> list[Verification]:
    """Step 4, at every planned size, every output; `references` from `torch_outputs`. `exact`, for a
    float32 model that normalises by a sample's own statistics, is called (once) only when a
    comparison exceeds the tolerance."""
    import numpy as np

    from ..runtime.session import Session

    # two runs: pool threads that sleep between tasks cost nothing here, and spinning ones slow a
    # busy machine (ResNet-50 batch 1 + 3: 0.34 s spinning during the run, 0.25 s never, load 2.4)
    session = Session(path, device="cpu", spinning="never")
    tolerance = TOLERANCE[dtype]
    g = report.graph
    results = []
    widened: list[list[Any]] = []
    for k, run in enumerate(plan.runs):
        xs = _inputs(report, plan, k, dtype)
        size = ", ".join("x".join(map(str, shape)) for shape in run.inputs)
        try:
            got_all = session.run({i.name: x for i, x in zip(g.inputs, xs)})
        except Exception as exc:
            raise ExportError(f"onnxruntime failed on input {size}: {first_line(exc)}") from exc
        reference = references[k] if references is not None else Reference([None] * len(g.outputs))
        how = reference.how
        worst = None
        for j, (out, ref, want_shape) in enumerate(zip(g.outputs, reference.outputs, run.outputs)):
            got = got_all[out.name]
            if tuple(got.shape) != want_shape:
                raise ExportError(f"at input {size} onnxruntime gives {out.name} {tuple(got.shape)}, "
                                  f"archspec check {want_shape}")
            if not np.isfinite(got).all():
                raise ExportError(f"onnxruntime's output {out.name} at input {size} is not finite")
            if ref is None:
                continue
            if tuple(ref.shape) != want_shape:
                raise ExportError(f"at input {size} PyTorch gives {out.name} {tuple(ref.shape)}, "
                                  f"archspec check {want_shape}")
            if not np.isfinite(ref).all():
                raise ExportError(f"the PyTorch output {out.name} at input {size} is not finite; "
                                  "cannot verify the export")
            diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
            max_abs = float(diff.max()) if diff.size else 0.0
            scale = float(np.abs(ref.astype(np.float64)).max()) if ref.size else 0.0
            rel = max_abs / max(1.0, scale)
            if not rel <= tolerance and exact is not None:  # as accurate as PyTorch float32?
                widened = widened or exact()
                ort, own = (float(np.abs(a.astype(np.float64) - widened[k][j]).max()) for a in (got, ref))
                max_abs, rel = max(ort - own, 0.0), max(ort - own, 0.0) / max(1.0, scale)
                how = "float64; the error is onnxruntime's beyond PyTorch float32's (a per-sample normalisation)"
                if not rel <= tolerance:
                    raise ExportError(f"onnxruntime differs from PyTorch at input {size} on output {out.name} by more "
                                      f"than {tolerance:g} x max(1, {scale:.3g}), and from PyTorch in float64 by {ort:.3g}, "
                                      f"more than PyTorch float32's own {own:.3g} + {tolerance:g} x max(1, {scale:.3g})")
            if not rel <= tolerance:
                raise ExportError(f"onnxruntime differs from PyTorch at input {size} on output {out.name}: max abs "
                                  f"error {max_abs:.3g} > {tolerance:g} x max(1, {scale:.3g})")
            if worst is None or rel > worst[1]:
                worst = (max_abs, rel, scale)
        shapes = (tuple(run.inputs), tuple(run.outputs))
        if worst is None:
            results.append(Verification(*shapes, float("nan"), float("nan"), float("nan")))
        else:
            results.append(Verification(*shapes, *worst, how))
    return results


def _torch_run(module: Any, xs: tuple[Any, ...], in_float32: bool = False) -> tuple[list[Any], str]:
    """The module's outputs; a float16 module whose kernels PyTorch lacks in half precision on this
    device (e.g. LRN's avg_pool3d on CPU) runs in float32 on its float16-rounded weights, and says so.
    `in_float32`: an earlier run fell back already (a module without parameters cannot tell)."""
    import numpy as np
    import torch

    fallback = "in float32 on the float16 weights: a kernel lacks float16 on the CPU"

    def call(arrays: tuple[Any, ...]) -> list[Any]:
        ys = module(*(torch.from_numpy(a) for a in arrays))
        return [y.numpy() for y in (ys if isinstance(ys, tuple) else (ys,))]

    as_float = tuple(a.astype(np.float32) if a.dtype == np.float16 else a for a in xs)
    with torch.no_grad():
        if in_float32 and any(a.dtype == np.float16 for a in xs):
            return call(as_float), fallback
        try:
            return call(xs), ""
        except NotImplementedError:
            if all(a.dtype != np.float16 for a in xs):
                raise
            module.float()
            return call(as_float), fallback
