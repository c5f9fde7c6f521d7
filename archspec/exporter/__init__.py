"""Stage 6, export: the analysed spec -> a verified ONNX file, without tracing.

Each layer kind emits its own ONNX nodes (`LayerKind.emit`, beside its PyTorch `lower`); the
exporter plans the dynamic axes (`plan`), takes the weights from a file or a seeded numpy
initialisation (`params`), walks the spec emitting nodes (`emit`), verifies the file (`verify`:
checker, symbolic axes, shape inference = archspec check, and onnxruntime = PyTorch when torch is
installed) and commits it atomically (`write`). PyTorch is needed only for the numeric comparison
and to read `.pt` state dicts; `pip install archspec[export]` exports without it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..analyze import Report
from ..files import check_output, commit, staging
from ..labels import spec_labels
from ..layers import REGISTRY
from ..memory import needed, require
from ..runtime import session  # noqa: F401  (it keeps onnxruntime from writing under the home folder)
from ..weights import WeightsError, as_state, check_weights, expected_tensors, file_limit, sidecar_note
from .errors import ExportError
from .params import initial_state, iter_layers
from .plan import BATCH_AXIS, Plan, plan_export, report_at
from .precision import Quantization
from .verify import TOLERANCE, Verification, example_input, example_inputs, vocab_size

DEFAULT_OPSET = 17
SUPPORTED_OPSETS = range(13, 24)  # 13: Squeeze/Unsqueeze/ReduceSum axes as inputs, Softmax per axis; 23: onnxruntime 1.2x

__all__ = ["BATCH_AXIS", "DEFAULT_OPSET", "SUPPORTED_OPSETS", "TOLERANCE", "ExportError", "ExportResult",
           "Plan", "Verification", "WeightsError", "example_input", "example_inputs", "expected_tensors",
           "export_model", "initial_state", "iter_layers", "report_at", "vocab_size"]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    opset: int
    dynamic_axes: Mapping[str, int]  # axis name -> input axis index (0 = batch)
    checks: tuple[Verification, ...]  # one per checked size; every dynamic axis takes two sizes
    tolerance: float
    seconds: float  # total wall time, export and verification
    export_seconds: float
    verify_seconds: float
    bytes: int  # model file plus external data
    external_data: Path | None = None
    notes: tuple[str, ...] = ()
    dtype: str = "float32"
    quantization: Quantization | None = None  # with quantize="int8"; `checks` are then of the float32 model

    @property
    def compared(self) -> bool:
        """Whether onnxruntime was compared with PyTorch (False: torch not installed)."""
        return bool(self.checks) and all(c.compared for c in self.checks)

    @property
    def sizes_checked(self) -> tuple[tuple[int, ...], ...]:
        return tuple(c.input_shape for c in self.checks)

    @property
    def max_abs_error(self) -> float:
        return max((c.max_abs_error for c in self.checks if c.compared), default=0.0)

    @property
    def max_rel_error(self) -> float:
        return max((c.max_rel_error for c in self.checks if c.compared), default=0.0)

    def summary(self) -> str:
        size = f"{self.bytes / 1e6:.1f} MB" if self.bytes >= 10**5 else f"{self.bytes / 1e3:.1f} KB"
        axes = ", ".join(self.dynamic_axes) or "none"
        data = f", external data {self.external_data.name}" if self.external_data else ""
        kind = "int8 from float32" if self.quantization else self.dtype
        lines = [f"wrote {self.path} ({size}{data}; {kind}, opset {self.opset}, dynamic axes: {axes}) "
                 f"in {self.seconds:.1f}s"]
        structure = "onnx checker (full), dynamic axes symbolic, shape inference = archspec check"
        if not self.checks:
            lines.append("NOT verified (check=False)")
        elif self.compared:
            lines.append(f"verified: {structure}, onnxruntime = PyTorch within {self.tolerance:g} x max(1, |output|):")
        else:
            lines.append(f"verified: {structure}, onnxruntime runs; numeric verification against PyTorch "
                         "SKIPPED (torch is not installed):")
        lines += [f"  {c}" for c in self.checks]
        if self.quantization:
            lines.append(f"quantized: {self.quantization}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def export_model(report: Report, output: str | os.PathLike, *,
                 weights: str | os.PathLike | Mapping[str, Any] | None = None, opset: int | None = None,
                 dynamic: str | Iterable[str] | bool | None = None, check: bool = True, seed: int = 0,
                 dtype: str = "float32", quantize: str | None = None,
                 calibration: Sequence[str | os.PathLike] | None = None) -> ExportResult:
    """Emits the spec as ONNX to `output` and verifies it (see `verify`).

    weights: a state dict of the module `archspec.build` returns (a mapping of numpy arrays or torch
    tensors), or a file: `.npz`, or `torch.save(module.state_dict())` (needs torch); without it,
    seeded numpy initial values of the spec's `init` scheme (`initial_state(report, seed)`).
    dynamic: axis names to keep dynamic, e.g. "batch,time"; default every axis that can be
    (batch, and each input axis the spec declares symbolic as `name=nominal`); False or "none"
    for a fully static model (batch 1).
    dtype: "float32", or "float16" (weights and activations; verified against PyTorch in float16).
    quantize: "int8" writes the model quantized by onnxruntime's static quantization, calibrated on
    `calibration` (.npy files of inputs) or random inputs; the float32 model is verified first, the
    int8 one checked and its error against float32 measured (`ExportResult.quantization`).
    check=False skips the verification (for debugging the emission only).
    """
    from . import write
    from .emit import emit_graph

    started = time.perf_counter()
    inputs = (report.graph.doc.file, None if weights is None or isinstance(weights, Mapping) else weights)
    output = check_output(output, inputs=inputs)
    if dtype not in TOLERANCE:
        raise ExportError(f"unknown dtype {dtype!r}; choose {' or '.join(TOLERANCE)}")
    if quantize not in (None, "int8"):
        raise ExportError(f"unknown quantization {quantize!r}; choose int8")
    if quantize and dtype != "float32":
        raise ExportError("--quantize int8 starts from the float32 model; leave --dtype at float32")
    if quantize and len(report.graph.inputs) > 1:
        raise ExportError("--quantize int8 calibrates a model with one input; this spec has "
                          f"{len(report.graph.inputs)}")
    opset = _opset(report, opset)
    plan = plan_export(report, dynamic)
    require(f"exporting '{report.graph.name}'", needed(report, "export"))
    notes: list[str] = list(plan.notes)

    def load_state() -> tuple[dict[str, Any], str]:
        """The weights and where from; called again only by a float64 check (`verify.exact_outputs`)."""
        if weights is None:
            return initial_state(report, seed), f"initial (numpy seed {seed}, init {report.graph.spec.init.scheme})"
        expected = expected_tensors(report)
        raw, where = as_state(weights, file_limit(shape for shape, _ in expected.values()))
        return check_weights(raw, expected, report.graph.name, where), \
            "state dict" if isinstance(weights, Mapping) else f"{Path(where).name} sha256:{write.sha256(Path(where))}"

    state, source = load_state()
    if weights is not None and not isinstance(weights, Mapping):
        notes += sidecar_note(Path(weights), report.graph.name, report.graph.sha256)

    with staging(output) as tmpdir:
        t0 = time.perf_counter()
        model, tensors = emit_graph(report, state, plan, opset, dtype)
        _annotate(model, report, source)
        staged = tmpdir / output.name
        data = write.save(model, tensors, staged)
        del model, tensors
        t1 = time.perf_counter()
        checks: list[Verification] = []
        if check:
            from .verify import check_numerics, check_structure, conditioned, exact_outputs, torch_outputs

            references = torch_outputs(report, state, plan, dtype)
            del state  # the checker and onnxruntime parse their own copies of the weights from the file
            check_structure(staged, report, plan)
            exact = (lambda: exact_outputs(report, load_state()[0], plan)) \
                if dtype == "float32" and conditioned(report) else None  # the weights again, only if needed
            checks = check_numerics(staged, references, report, plan, dtype, exact)
            if not checks[0].compared:
                notes.append("numeric verification skipped: PyTorch is not installed (onnxruntime ran at every "
                             "checked size, outputs finite and of archspec's shapes)")
        quantization = None
        if quantize:
            from .precision import calibration_inputs, quantize_int8
            from .verify import check_numerics, check_structure

            if data is not None:
                raise ExportError("--quantize int8 is not supported for models over 2 GB (external data)")
            batches, where = calibration_inputs(report, report.graph.input.shape, calibration)
            int8 = tmpdir / f"int8.{output.name}"
            quantization = quantize_int8(staged, int8, report, batches, where)
            check_structure(int8, report, plan)
            check_numerics(int8, None, report, plan)  # runs at every checked size, finite, archspec's shapes
            os.replace(int8, staged)
        t2 = time.perf_counter()
        size = staged.stat().st_size + (data.stat().st_size if data else 0)
        data_path = commit(staged, output, data=data, inputs=inputs, data_of=write.external_data_files)
    return ExportResult(
        path=output, opset=opset, dynamic_axes=dict(plan.axes), checks=tuple(checks), tolerance=TOLERANCE[dtype],
        seconds=time.perf_counter() - started, export_seconds=t1 - t0, verify_seconds=t2 - t1, bytes=size,
        external_data=data_path, notes=tuple(notes), dtype=dtype, quantization=quantization)


def _opset(report: Report, opset: int | None) -> int:
    """The requested opset (default DEFAULT_OPSET), within SUPPORTED_OPSETS and at least every kind's minimum."""
    chosen = DEFAULT_OPSET if opset is None else opset
    if chosen not in SUPPORTED_OPSETS:
        raise ExportError(f"opset {chosen} is not supported; choose {SUPPORTED_OPSETS.start}.."
                          f"{SUPPORTED_OPSETS.stop - 1} (default {DEFAULT_OPSET})")
    needs = {node.kind: REGISTRY[node.kind].min_opset for node in report.graph.nodes}
    late = sorted(k for k, v in needs.items() if v > chosen)
    if late:
        raise ExportError(f"opset {chosen} is too old for {', '.join(f'{k} (needs {needs[k]})' for k in late)}")
    return chosen


def _annotate(model: Any, report: Report, source: str) -> None:
    """Model metadata from the spec: what `archspec run` and users read back."""
    from .. import __version__

    g = report.graph
    inputs = []
    for i in g.inputs:
        inp = {"name": i.name, "dtype": i.dtype, "layout": i.layout,
               "dims": [{"name": d.name, "nominal": d.size} if d.name else {"size": d.size} for d in i.dims]}
        if i.dtype == "int64":
            inp["vocab"] = vocab_size(report)
        inputs.append(inp)
    outputs = [{"name": o.name, "shape": list(t.shape), "layout": t.axes,
                "scores": t.axes == "F" and g.nodes[g.values[o.value].producer].kind == "linear"
                if g.values[o.value].producer is not None else False}
               for o, t in zip(g.outputs, report.outputs.values())]
    meta = {
        "archspec.spec": g.name, "archspec.spec_sha256": g.sha256, "archspec.version": __version__,
        "archspec.source": g.doc.file, "archspec.params": str(report.totals.params),
        "archspec.macs": str(report.totals.macs), "archspec.flops": str(report.totals.flops),
        "archspec.input": json.dumps(inputs[0]), "archspec.weights": source,
        "archspec.output_shape": json.dumps(list(report.output.shape)),
        "archspec.inputs": json.dumps(inputs), "archspec.outputs": json.dumps(outputs),
    }
    labels = spec_labels(report)
    if labels is not None:  # `archspec run` names the top classes
        meta["archspec.labels"] = json.dumps(list(labels))
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = g.description or f"archspec spec '{g.name}'"
